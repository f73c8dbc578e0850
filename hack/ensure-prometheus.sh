#!/usr/bin/env bash
# Makes sure prometheus and promtool are on PATH: test/e2e checks the dashboard
# and the alerts against a real Prometheus, and `make demo DEMO_FLAGS=--prometheus`
# starts one. Installs Debian's package when missing and running as root;
# otherwise says how to install it.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "prometheus: not found; installing Debian's prometheus package (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends prometheus >&2
  # The package may start a system-wide server; tests and the demo start their
  # own on free ports.
  exit 0
fi
cat >&2 <<'MSG'
prometheus: prometheus and promtool are not installed, and this script can only
install them as root. Install them, then run the command again:
  Debian/Ubuntu:  sudo apt-get install prometheus
  macOS:          brew install prometheus
Or put prometheus and promtool (2.42 or newer) on PATH.
MSG
exit 1
