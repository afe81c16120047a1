#!/usr/bin/env bash
# Debian's Chromium for the browser tests (tests/app/test_browser.py), driven by Playwright with
# executable_path=/usr/bin/chromium (`playwright install` cannot download browsers here).
# Idempotent: returns at once when /usr/bin/chromium runs. Needs root (or sudo) for apt.
set -euo pipefail
if /usr/bin/chromium --version >/dev/null 2>&1; then
    echo "chromium: $(/usr/bin/chromium --version)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "chromium: $(/usr/bin/chromium --version)"
