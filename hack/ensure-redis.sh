#!/usr/bin/env bash
# Makes sure redis-server and redis-cli are on PATH: tests and the demo start their
# own servers from these binaries. Installs Debian's packages when missing and
# running as root; otherwise says how to install them.
set -euo pipefail
if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "redis: redis-server not found; installing Debian's redis-server package (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends redis-server redis-tools >&2
  # The package may start a system-wide server; the tests start their own on free ports.
  exit 0
fi
cat >&2 <<'MSG'
redis: redis-server is not installed, and this script can only install it as root.
Install it, then run the command again:
  Debian/Ubuntu:  sudo apt-get install redis-server
  macOS:          brew install redis
Or put a redis-server (7.0 or newer) and redis-cli on PATH.
MSG
exit 1
