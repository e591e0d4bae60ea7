#!/bin/sh
# Print the path of a promtool binary, extracting it from Debian's `prometheus` package into
# build/tools on first use (installing the whole package would also start a Prometheus server).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
if command -v promtool >/dev/null 2>&1; then command -v promtool; exit 0; fi
tool="$here/build/tools/promtool"
if [ ! -x "$tool" ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    chmod 0777 "$work" # apt's download user must be able to write here
    (cd "$work" && apt-get download -q prometheus >/dev/null 2>&1) ||
        { apt-get update -qq && (cd "$work" && apt-get download -q prometheus >/dev/null); }
    dpkg-deb -x "$work"/prometheus_*.deb "$work/x"
    mkdir -p "$(dirname "$tool")"
    cp "$work/x/usr/bin/promtool" "$tool"
fi
echo "$tool"
