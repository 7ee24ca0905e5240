#!/usr/bin/env bash
# Install Debian's wrk, the HTTP load generator of bench/api.py, if it is missing (without it
# the bench falls back to Python client threads, which take a share of the CPU they measure).
set -euo pipefail

if command -v wrk >/dev/null; then
  echo "wrk: $(command -v wrk)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
echo "installing wrk"
if ! $SUDO apt-get install -y --no-install-recommends wrk; then
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends wrk
fi
echo "wrk: $(command -v wrk)"
