#!/usr/bin/env bash
# Installs moto's S3-compatible server (PyPI: moto[server]==5.2.5) for the
# tests of the S3 blob backend (crates/tern-store/tests/blob_conformance_s3.rs,
# tests/attachments_s3.rs; their harness starts `python3 -m moto.server` on
# a free port). Idempotent: does nothing when the pinned version is there.
# scripts/test.sh calls it first, as CI does on a fresh machine.
set -euo pipefail
MOTO_PIN="5.2.5"
have="$(python3 -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null || true)"
if [[ "$have" == "$MOTO_PIN" ]] && python3 -c 'import moto.server, flask' 2>/dev/null; then
    exit 0
fi
echo "installing moto[server]==${MOTO_PIN} from PyPI" >&2
python3 -m pip install --quiet --disable-pip-version-check "moto[server]==${MOTO_PIN}"
python3 -c 'import moto.server, flask'
