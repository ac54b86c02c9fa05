#!/usr/bin/env bash
# Set up, then lint (ruff), type-check (mypy) and test (pytest). Every check runs even when an
# earlier one fails; the exit status is non-zero if any of them failed.
# Arguments go to pytest:  bash scripts/test.sh -k upload -x
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh

PY=.venv/bin/python
failed=()

lint_dirs=()
for d in s3mpfs tests bench; do
    [ -d "$d" ] && lint_dirs+=("$d")
done

echo "== ruff check ${lint_dirs[*]}"
"$PY" -m ruff check "${lint_dirs[@]}" || failed+=(ruff)

echo "== mypy"
"$PY" -m mypy || failed+=(mypy)

echo "== pytest -q -p no:cacheprovider $*"
pytest_rc=0
"$PY" -m pytest -q -p no:cacheprovider "$@" || pytest_rc=$?
case "$pytest_rc" in
    0) ;;
    5) echo "pytest: no tests were collected (exit 5): counted as a failure"; failed+=(pytest) ;;
    *) failed+=(pytest) ;;
esac

if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    # pytest's own status when it failed (1 failures, 2 interrupted, 5 nothing collected...)
    [ "$pytest_rc" -ne 0 ] && exit "$pytest_rc"
    exit 1
fi
echo "OK: ruff, mypy and pytest passed"
