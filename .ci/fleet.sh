#!/usr/bin/env bash
# The fleet test (examples/memcached_server/tests/fleet.rs): three example servers behind
# libmemcached's consistent hashing; one is stopped and only its keys may move. A script and not
# plain `cargo test` because the client is libmemcached itself, loaded at run time, and the
# workspace's tests need no system library: this installs Debian's libmemcached11 with apt if it
# is missing, then runs the test, which `cargo test` alone skips as ignored.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! PATH="$PATH:/sbin:/usr/sbin" ldconfig -p | grep 'libmemcached\.so\.11 ' >/dev/null; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libmemcached11 >/dev/null
fi

cargo test -p memcached-server --test fleet -- --ignored --nocapture
