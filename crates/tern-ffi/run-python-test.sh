#!/usr/bin/env bash
# Runs tests/test_ffi.py, the SDK through its generated UniFFI Python
# bindings, against a real tern server and a user of the Rust CLI:
#   1. builds the tern binary and the tern-ffi library (debug) and generates
#      the bindings into target/ffi (generate.sh: Python, and Swift and Kotlin
#      too, compiled only where swiftc / kotlinc are installed),
#   2. starts target/debug/tern serve on a free port,
#   3. registers the CLI user with `tern register`,
#   4. runs the tests (the Python device registers itself through the
#      bindings); the server is always stopped.
# Extra arguments go to unittest (e.g. test_ffi.FfiTest.test_1_direct_exchange_with_the_cli).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"

# shellcheck source=../../scripts/test-server.sh
source scripts/test-server.sh
scratch_with_cleanup

# ---- build: the CLI and server, the library and its Python bindings
cargo build --quiet --bin tern
crates/tern-ffi/generate.sh --compile python swift kotlin

# ---- the server (scripts/test-server.sh, as conformance/run.sh starts it)
start_test_server "$work" ffi

# ---- the CLI user
cli_user=alice
target/debug/tern register --state "$work/cli" --server "$addr" --fingerprint "$fingerprint" \
  --device-name terminal "$cli_user" >&2

# ---- the tests
status=0
(
  cd crates/tern-ffi/tests
  TERN_ADDR="$addr" TERN_FINGERPRINT="$fingerprint" TERN_BIN="$ROOT/target/debug/tern" \
  TERN_CLI_STATE="$work/cli" TERN_CLI_USER="$cli_user" TERN_WORK="$work" \
  PYTHONPATH="$ROOT/target/ffi/python${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1 \
    timeout 300 python3 -m unittest -v "${@:-test_ffi}"
) || status=$?
if [[ $status -ne 0 ]]; then
  echo "ffi: FAILED; the server's log:" >&2
  tail -n 50 "$work/server.log" >&2
fi
exit $status
