#!/usr/bin/env bash
# Headless Chromium for the app's browser test (tests/app/test_app_browser.py): Debian's chromium
# package, driven through the playwright Python package with executable_path=/usr/bin/chromium.
# Playwright's own browser downloads are never used.
set -euo pipefail
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "setup-browser: $CHROMIUM is missing and this user cannot install it; run as root:" >&2
        echo "  apt-get update && apt-get install -y chromium" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y chromium
"$CHROMIUM" --version
