#!/usr/bin/env bash
# End-to-end demo: tar a ~200 MiB tree into an s3mpfs mount backed by a local moto S3 server,
# showing multipart parts arriving in S3 while tar is still writing. Arguments go to demo.py.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
