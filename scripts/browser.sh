#!/usr/bin/env bash
# Headless Chromium and its WebDriver server, for the browser test (ecosystem/tests/browser.rs).
#
#   scripts/browser.sh check     # exit 0 when both are there; else print which is not, exit 1
#   scripts/browser.sh install   # install Debian's `chromium` and `chromium-driver` (about
#                                # 370 MB, as root) when either is missing
#
# The test looks where `check` looks: on PATH, then at /usr/bin and /usr/lib/chromium. Nothing
# installs them behind a developer's back: `.ci/run` calls `install`; scripts/test only checks,
# and runs every other test when they are missing, saying that the browser test was skipped.
set -euo pipefail

say() { printf '==> %s\n' "$*" >&2; }

found() { # NAME: an executable file on PATH, or at one of Debian's paths, as the test looks
    local dir dirs="$PATH:/usr/bin:/usr/lib/chromium"
    local IFS=:
    for dir in $dirs; do
        [ -f "${dir:-.}/$1" ] && [ -x "${dir:-.}/$1" ] && return 0
    done
    return 1
}

missing() { # the programs that are not found, space-separated
    local name list=""
    for name in chromium chromedriver; do
        found "$name" || list="$list $name"
    done
    printf '%s' "${list# }"
}

case "${1:-}" in
check)
    absent=$(missing)
    if [ -n "$absent" ]; then
        echo "$absent"
        exit 1
    fi
    ;;
install)
    absent=$(missing)
    [ -z "$absent" ] && exit 0
    if [ "$(id -u)" != 0 ]; then
        say "$absent missing, and installing chromium and chromium-driver needs root"
        exit 1
    fi
    say "installing chromium and chromium-driver from Debian's packages (for $absent)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null ||
        { apt-get update -q >/dev/null &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; }
    ;;
*)
    echo "usage: scripts/browser.sh check|install" >&2
    exit 2
    ;;
esac
