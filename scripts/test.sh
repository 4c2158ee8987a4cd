#!/usr/bin/env bash
# The project's one test command: installs what the tests need when it is missing, then runs
# every test of the workspace. `.ci/run` calls it too. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Redis store's tests start their own redis-server on a free loopback port.
if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "scripts/test.sh: installing redis-server (Debian package) for the Redis store's tests"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q redis-server >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null && apt-get install -y -q redis-server >/dev/null; }
    else
        echo "scripts/test.sh: the Redis store's tests need redis-server; install it with:" >&2
        echo "    sudo apt-get install -y redis-server" >&2
        echo "scripts/test.sh: running the tests anyway: the Redis tests will fail, saying so" >&2
    fi
fi

exec cargo test --workspace "$@"
