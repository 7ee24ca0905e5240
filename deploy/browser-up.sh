#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for the browser tests (tests/e2e) if it is missing.
# Playwright drives this binary (executable_path=/usr/bin/chromium); it never downloads its own.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  echo "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo present)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
echo "installing chromium"
if ! $SUDO apt-get install -y --no-install-recommends chromium; then
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends chromium
fi
echo "chromium: $(/usr/bin/chromium --version)"
