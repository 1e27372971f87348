#!/bin/sh
# Debian packages the tests use: Chromium for the browser tests, espeak-ng for generated
# speech, sound-theme-freedesktop for real shutter / screen-capture sounds.
set -e
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v espeak-ng >/dev/null 2>&1 || missing="$missing espeak-ng"
[ -d /usr/share/sounds/freedesktop ] || missing="$missing sound-theme-freedesktop"
[ -z "$missing" ] && exit 0
echo "installing Debian packages:$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
