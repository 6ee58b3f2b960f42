#!/usr/bin/env bash
# Installs redis-server (Debian's package) for the tests of the Redis
# presence backend (tests/presence.rs, tests/common/redis.rs) when it is
# missing. CI runs as root on a fresh Debian machine: scripts/test.sh calls
# this first. Elsewhere, without root, it says what to install and fails.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "redis-server is missing: install it (e.g. sudo apt-get install -y redis-server)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends redis-server
# The tests start their own servers on free ports; the packaged service is not needed.
if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
