#!/usr/bin/env bash
# Debian's chromium, for the browser test of the drill report (tests/e2e/test_drill_report_browser.py):
# pip `playwright` (test extra) drives it with its bundled driver, offline; no `playwright install`
# (no browser download). Nothing is started: each test launches its own headless browser.
set -euo pipefail

install() {
    if ! command -v chromium >/dev/null; then
        apt-get -o DPkg::Lock::Timeout=600 update -qq
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends chromium >/dev/null
    fi
}

case "${1:-}" in
    install) install ;;
    start|stop) ;;
    *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
