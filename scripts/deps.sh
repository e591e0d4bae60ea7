#!/bin/sh
# Install the Debian packages fanout needs to build, test and run; do nothing when all are present.
set -eu
PKGS="build-essential pkg-config libevent-dev libjansson-dev libcmocka-dev libpq-dev libssl-dev openssl postgresql curl valgrind clang help2man docker-compose"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# Node.js and npm (for the validators in tests/tools) may come from outside Debian's packages.
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "deps: missing packages:$missing" >&2
    echo "deps: run 'sudo make deps' (or install them) and try again" >&2
    exit 1
fi
echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
# A fresh machine may have empty package lists.
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
