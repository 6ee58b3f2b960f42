# Sourced by the scripts that test tern from outside Rust (conformance/run.sh,
# crates/tern-ffi/run-python-test.sh): starts target/debug/tern serve on a free
# loopback port and reads the address and certificate fingerprint it prints.
#
#   start_test_server WORK_DIR NAME [serve arguments...]
#
# Sets server_pid, addr and fingerprint; the caller's EXIT trap stops the
# server (kill "$server_pid"). On failure prints the server's output and exits 1.
start_test_server() {
  local work="$1" name="$2"
  shift 2
  target/debug/tern serve --data "$work/data" --listen 127.0.0.1:0 "$@" \
    >"$work/server.out" 2>"$work/server.log" &
  server_pid=$!
  addr="" fingerprint=""
  for _ in $(seq 1 300); do
    addr="$(sed -n 's/^tern listening on \([^ ]*\).*/\1/p' "$work/server.out")"
    fingerprint="$(sed -n 's/^certificate fingerprint: \([0-9a-f]*\).*/\1/p' "$work/server.out")"
    [[ -n "$addr" && -n "$fingerprint" ]] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  if [[ -z "$addr" || -z "$fingerprint" ]]; then
    echo "$name: the server did not start" >&2
    cat "$work/server.out" "$work/server.log" >&2
    exit 1
  fi
  echo "$name: server $addr, fingerprint $fingerprint" >&2
}

# A scratch directory for the run and an EXIT trap that stops the server
# (when one was started) and removes the directory. Sets `work`.
scratch_with_cleanup() {
  work="$(mktemp -d)"
  server_pid=""
  trap 'if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
          kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true
        fi; rm -rf "$work"' EXIT
}
