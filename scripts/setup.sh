#!/usr/bin/env bash
# Prepare a development environment: system packages for building pyfuse3, .venv, and the
# project with its test extras. Idempotent; safe to run from any directory, any number of times.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'setup: %s\n' "$*"; }

# apt-get as root, through sudo when we are not root and sudo exists.
SUDO=()
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
fi
APT_UPDATED=0
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        say "apt-get not found: install these packages by hand: $*" >&2
        exit 1
    fi
    if [ "$(id -u)" -ne 0 ] && [ ${#SUDO[@]} -eq 0 ]; then
        say "need root (or sudo) to install: $*" >&2
        exit 1
    fi
    if [ "$APT_UPDATED" -eq 0 ]; then
        say "apt-get update"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# 1. System packages: pyfuse3 has no wheels, it builds against libfuse3 (found by pkg-config),
#    needs a C compiler and Python's headers, and mounting needs fusermount3 (fuse3). The
#    tests drive the mount with real programs, rsync, zip, unzip and sqlite3 among them (not in
#    a minimal Debian), and setfattr/getfattr (attr).
missing=()
for pkg in fuse3 libfuse3-dev pkg-config rsync attr zip unzip sqlite3; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1; then
    missing+=(gcc)
fi
if ! python3 -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
    missing+=(python3-dev)
fi
if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}"
else
    say "system packages present (fuse3 libfuse3-dev pkg-config rsync attr, C compiler, Python headers)"
fi

# s3fs-fuse: tests/fuse/test_links.py mounts it beside s3mpfs on the same bucket (that test
# skips, saying why, where s3fs cannot be installed). Best effort: never fails the setup.
if ! command -v s3fs >/dev/null 2>&1; then
    apt_install s3fs || say "s3fs could not be installed: its interoperability test will skip"
fi

# 2. The virtualenv. A failed `python3 -m venv` (Debian without python3-venv: no ensurepip)
#    leaves a .venv without pip behind, so "usable" means "its python can run pip".
if .venv/bin/python -m pip --version >/dev/null 2>&1; then
    say ".venv exists"
else
    say "creating .venv"
    if ! python3 -m venv --clear .venv >/dev/null 2>&1; then
        if python3 -c 'import ensurepip' >/dev/null 2>&1; then
            python3 -m venv --clear .venv   # failed for another reason: run again to show why
        else
            say "python3 -m venv failed (no ensurepip): installing python3-venv"
            apt_install python3-venv
            python3 -m venv --clear .venv
        fi
    fi
fi

# 3. pip itself, then the project (editable) with the test tools. -q keeps errors visible.
# pip's output (build-backend warnings and all) is shown only when it fails.
pip_quiet() {
    local out
    if ! out=$(.venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2>&1); then
        printf '%s\n' "$out" >&2
        say "FAILED: pip install $*" >&2
        exit 1
    fi
}
say "upgrading pip"
pip_quiet --upgrade pip
say "pip install -e '.[test]'"
pip_quiet -e '.[test]'
say "done: $(.venv/bin/python --version), $(.venv/bin/python -m pip --version | cut -d' ' -f1-2)"
