#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for the browser tests (tests/e2e) if it is missing.
# Playwright drives this binary (executable_path=/usr/bin/chromium); it never downloads its own.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  echo "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo present)"
  exit 0
fi

bash "$(dirname "$0")/apt-install.sh" chromium
echo "chromium: $(/usr/bin/chromium --version)"
