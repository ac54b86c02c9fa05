#!/usr/bin/env bash
# Run pytest against a private, throwaway Ceph RADOS Gateway (../shared/tools/ceph-rgw):
# installs the Ceph packages when missing, starts a one-node cluster on free ports in a
# directory of its own, points the tests at it (S3MPFS_TEST_*), runs pytest, and always stops
# and wipes the cluster, whatever happens.
#
#   bash scripts/ceph.sh                       # tests/fuse tests/store
#   bash scripts/ceph.sh tests/fuse -k rename -x
#
# Arguments go to pytest. The exit status is pytest's (or 1 if Ceph could not be set up).
# Knobs: CEPH_RGW_TOOL (default ../shared/tools/ceph-rgw), CEPH_STORE, CEPH_SIZE_GB, RGW_DEBUG
# (passed to start.sh), S3MPFS_SETUP_DONE=1 (scripts/test.sh ran scripts/setup.sh already).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'ceph: %s\n' "$*"; }
now() { date +%s.%N; }
secs() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }

TOOL=${CEPH_RGW_TOOL:-../shared/tools/ceph-rgw}
if [ ! -f "$TOOL/start.sh" ] || [ ! -f "$TOOL/stop.sh" ]; then
    say "$TOOL/start.sh and stop.sh not found (set CEPH_RGW_TOOL)" >&2
    exit 1
fi
TOOL=$(cd "$TOOL" && pwd)
[ $# -gt 0 ] || set -- tests/fuse tests/store

if [ "${S3MPFS_SETUP_DONE:-0}" != 1 ]; then
    bash scripts/setup.sh
fi

# 1. Packages: radosgw ceph-mon ceph-osd (~270 MB), like setup.sh installs fuse3. apt-get
#    update only when apt knows no candidate for them, or when the install fails (stale lists).
T_INSTALL=$(now)
SUDO=()
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
fi
CEPH_PKGS=(radosgw ceph-mon ceph-osd)
missing=()
for pkg in "${CEPH_PKGS[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
for cmd in uuidgen curl bc; do  # start.sh needs these too (uuid-runtime, curl, bc)
    command -v "$cmd" >/dev/null 2>&1 || case "$cmd" in
        uuidgen) missing+=(uuid-runtime) ;;
        *) missing+=("$cmd") ;;
    esac
done
if [ ${#missing[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        say "apt-get not found: install these packages by hand: ${missing[*]}" >&2
        exit 1
    fi
    if [ "$(id -u)" -ne 0 ] && [ ${#SUDO[@]} -eq 0 ]; then
        say "need root (or sudo) to install: ${missing[*]}" >&2
        exit 1
    fi
    apt_get() { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "$@"; }
    updated=0
    if ! apt-cache policy "${missing[@]}" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        say "apt-get update"
        apt_get update -qq
        updated=1
    fi
    say "apt-get install ${missing[*]}"
    if ! apt_get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
        [ "$updated" -eq 1 ] && exit 1
        say "install failed: apt-get update, then once more"
        apt_get update -qq
        apt_get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    D_INSTALL=$(secs "$T_INSTALL")
    say "installed in $D_INSTALL s"
else
    D_INSTALL=0
    say "packages present (${CEPH_PKGS[*]})"
fi

# 2. A cluster of our own: a fresh directory and free ports (other sessions may run a Ceph on
#    7480/3300 here). The mon also listens on MON_PORT+3489 (msgr v1).
read -r RGW_PORT MON_PORT < <(.venv/bin/python - <<'PY'
import socket

def free(port=0):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return None
        return s.getsockname()[1]

rgw = free()
while True:
    mon = free()
    if mon != rgw and mon + 3489 < 65536 and free(mon + 3489):
        break
print(rgw, mon)
PY
)
[ -n "${MON_PORT:-}" ] || { say "could not find free ports" >&2; exit 1; }
export RGW_PORT MON_PORT
export CEPH_DIR
CEPH_DIR=$(mktemp -d "${TMPDIR:-/tmp}/s3mpfs-ceph.XXXXXX")
export RGW_DEBUG=${RGW_DEBUG:-0}

stop_ceph() {
    local rc=$?
    trap - EXIT INT TERM
    "$TOOL/stop.sh" --wipe 2>&1 | sed 's/^/ceph: /' || true
    exit "$rc"
}
trap stop_ceph EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

T_START=$(now)
say "starting RADOS Gateway on 127.0.0.1:$RGW_PORT (mon $MON_PORT) in $CEPH_DIR"
if ! "$TOOL/start.sh" > "$CEPH_DIR.start.log" 2>&1; then
    cat "$CEPH_DIR.start.log" >&2
    tail -n 20 "$CEPH_DIR"/log/*.log "$CEPH_DIR"/log/*.out "$CEPH_DIR"/log/*.err 2>/dev/null >&2 || true
    rm -f "$CEPH_DIR.start.log"
    say "could not start Ceph" >&2
    exit 1
fi
rm -f "$CEPH_DIR.start.log"
D_START=$(secs "$T_START")
say "started in $D_START s"

# 3. The tests, pointed at it.
# shellcheck disable=SC1091
. "$CEPH_DIR/s3.env"
export S3MPFS_TEST_ENDPOINT=$S3_ENDPOINT
export S3MPFS_TEST_ACCESS_KEY=$AWS_ACCESS_KEY_ID
export S3MPFS_TEST_SECRET_KEY=$AWS_SECRET_ACCESS_KEY
export S3MPFS_TEST_REGION=$AWS_DEFAULT_REGION
export S3MPFS_TEST_SERVER=ceph
unset S3_ENDPOINT AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION CEPH_CONF \
    S3MPFS_TEST_SESSION_TOKEN S3MPFS_TEST_LACKS

T_RUN=$(now)
say "pytest against Ceph RGW at $S3MPFS_TEST_ENDPOINT: $*"
rc=0
.venv/bin/python -m pytest -q -p no:cacheprovider -rfEsxX "$@" || rc=$?
say "pytest against Ceph RGW: exit status $rc; seconds: install $D_INSTALL, start $D_START," \
    "pytest $(secs "$T_RUN")"
exit "$rc"
