#!/usr/bin/env bash
# Makes sure headless Chromium and its WebDriver server are installed, for the browser test
# (ecosystem/tests/browser.rs), installing Debian's `chromium` and `chromium-driver` when
# either is missing. scripts/test runs it; it can also be run alone.
set -euo pipefail

say() { printf '==> %s\n' "$*" >&2; }

install() { # PACKAGE...
    say "installing $* from Debian's packages"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null ||
        { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
}

found() { # NAME DEBIAN_PATH
    command -v "$1" >/dev/null || [ -x "$2" ]
}

if ! found chromium /usr/bin/chromium || ! found chromedriver /usr/bin/chromedriver; then
    install chromium chromium-driver
fi
