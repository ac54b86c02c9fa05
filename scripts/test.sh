#!/usr/bin/env bash
# Set up, then lint (ruff), type-check (mypy), check the import layers (lint-imports) and test
# (pytest): the whole suite against moto
# (or the server S3MPFS_TEST_ENDPOINT names), then tests/fuse and tests/store against a
# throwaway Ceph RADOS Gateway (scripts/ceph.sh; when ../shared/tools/ceph-rgw exists, unless
# S3MPFS_SKIP_CEPH=1). Every check runs even when an earlier one fails; the exit status is
# non-zero if any of them failed (Ceph that cannot be installed or started counts as failed).
# Arguments go to pytest:  bash scripts/test.sh -k upload -x
# With arguments the Ceph phase is skipped, unless S3MPFS_SKIP_CEPH=0: it then gets the same
# arguments.
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

echo "== lint-imports (the layers in pyproject.toml: no import against the flow, no cycle)"
.venv/bin/lint-imports --no-cache || failed+=(lint-imports)

now() { date +%s; }

# moto, unless S3MPFS_TEST_ENDPOINT names another server (README "Tests").
if [ -n "${S3MPFS_TEST_ENDPOINT:-}" ]; then
    main="${S3MPFS_TEST_SERVER:-S3} at $S3MPFS_TEST_ENDPOINT (S3MPFS_TEST_ENDPOINT)"
else
    main="moto (started on 127.0.0.1 by the tests)"
fi
echo "== pytest against $main: pytest -q -p no:cacheprovider -rfEsxX $*"
t0=$(now)
pytest_rc=0
"$PY" -m pytest -q -p no:cacheprovider -rfEsxX "$@" || pytest_rc=$?
main_result="$main: pytest exit status $pytest_rc in $(( $(now) - t0 )) s"
case "$pytest_rc" in
    0) ;;
    5) echo "pytest: no tests were collected (exit 5): counted as a failure"; failed+=(pytest) ;;
    *) failed+=(pytest) ;;
esac

# The same filesystem and store tests against a second S3 implementation.
ceph_rc=0
ceph_result="Ceph RGW: not run"
if [ ! -d ../shared/tools/ceph-rgw ]; then
    ceph_result="Ceph RGW: skipped (../shared/tools/ceph-rgw not found)"
elif [ "${S3MPFS_SKIP_CEPH:-}" = 1 ]; then
    ceph_result="Ceph RGW: skipped (S3MPFS_SKIP_CEPH=1)"
elif [ $# -gt 0 ] && [ "${S3MPFS_SKIP_CEPH:-}" != 0 ]; then
    ceph_result="Ceph RGW: skipped (pytest arguments given; S3MPFS_SKIP_CEPH=0 runs it with them)"
else
    echo "== pytest against Ceph RADOS Gateway (scripts/ceph.sh): ${*:-tests/fuse tests/store}"
    t0=$(now)
    S3MPFS_SETUP_DONE=1 bash scripts/ceph.sh "$@" || ceph_rc=$?
    ceph_result="Ceph RGW: pytest exit status $ceph_rc in $(( $(now) - t0 )) s (install, start, run, stop)"
    case "$ceph_rc" in
        0) ;;
        *) failed+=(pytest-ceph) ;;
    esac
fi

echo "== results"
echo "$main_result"
echo "$ceph_result"
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    # pytest's own status when it failed (1 failures, 2 interrupted, 5 nothing collected...)
    [ "$pytest_rc" -ne 0 ] && exit "$pytest_rc"
    [ "$ceph_rc" -ne 0 ] && exit "$ceph_rc"
    exit 1
fi
echo "OK: ruff, mypy, lint-imports and pytest passed"
