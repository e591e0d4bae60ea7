#!/bin/sh
# Offline checks of Dockerfile and docker-compose.yml: no Docker engine runs on the project's
# machines, so nothing here builds or starts a container. Prints each command it runs, and each
# finding; exits 1 when there was any finding.
#
#   1. docker-compose -f docker-compose.yml config -q      (Debian's docker-compose 1.29)
#   2. dockerfilelint Dockerfile                           (npm, pinned in tests/tools)
#   3. every COPY source exists, and the folders copied hold every .c file `make` compiles
#   4. the runtime stage installs exactly the packages of the libraries the binary links
#      (FANOUT_BIN, default build/fanout; glibc is in every Debian image)
#   5. every host path docker-compose.yml mounts exists, and so does the default wrk script
#
# Usage: scripts/check-container.sh   (FANOUT_BIN=build/debug/fanout to check another build)
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 1

findings=0
finding() {
    echo "check-container: $*" >&2
    findings=$((findings + 1))
}
show() { echo "+ $*"; }

# 1. The compose file against docker-compose's schema. Warnings count: any output is a finding.
if command -v docker-compose >/dev/null 2>&1; then
    show docker-compose -f docker-compose.yml config -q
    if ! out=$(docker-compose -f docker-compose.yml config -q 2>&1) || [ -n "$out" ]; then
        printf '%s\n' "$out"
        finding "docker-compose config reported the above"
    fi
else
    finding "docker-compose is missing (Debian package docker-compose: make deps)"
fi

# 2. dockerfilelint exits with its count of issues and prints "None found" when there are none.
lint=tests/tools/node_modules/.bin/dockerfilelint
if [ ! -x "$lint" ]; then
    show "(cd tests/tools && npm ci --no-audit --no-fund)"
    (cd tests/tools && npm ci --no-audit --no-fund) || finding "npm ci in tests/tools failed"
fi
if [ -x "$lint" ]; then
    show "$lint" Dockerfile
    out=$("$lint" Dockerfile 2>&1); rc=$?
    printf '%s\n' "$out"
    if [ "$rc" != 0 ] || ! printf '%s\n' "$out" | grep -q 'None found'; then
        finding "dockerfilelint reported issues"
    fi
fi

# 3. COPY sources (instructions without --from, each on one line): they exist, and `make`
# compiles no .c file from a folder they leave out.
show "COPY sources of Dockerfile; make -n -B build/fanout"
copied=$(sed -n 's/^COPY[[:space:]]\{1,\}//p' Dockerfile | grep -v -- '--from' |
    awk '{ for (i = 1; i < NF; i++) if ($i !~ /^--/) print $i }' | sed 's#/$##')
for src in $copied; do
    [ -e "$src" ] || finding "Dockerfile copies $src, which does not exist"
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
make -s -n -B BUILD="$tmp" "$tmp/fanout" >"$tmp/plan" 2>&1 || { cat "$tmp/plan"; finding "make -n failed"; }
grep -o -- '-c [^ ]*\.c' "$tmp/plan" | cut -c4- | sort -u >"$tmp/compiled"
while read -r c; do
    echo "$copied" | grep -qx "${c%%/*}" || finding "make compiles $c, but the Dockerfile does not copy ${c%%/*}/"
done <"$tmp/compiled"

# 4. Runtime libraries: the packages of the binary's NEEDED libraries against the runtime stage's
# apt-get install line (every stage installs on one line starting with that command).
bin=${FANOUT_BIN:-build/fanout}
base_pkgs="libc6 libgcc-s1" # glibc (libc, libm, libpthread...) and its dependency: in every Debian image
runtime_pkgs=$(sed -n '/^FROM .* AS runtime/,$p' Dockerfile |
    sed -n 's/.*apt-get install -y --no-install-recommends \([^&\\]*\).*/\1/p')
show "objdump -p $bin; dpkg -S: NEEDED libraries against: $runtime_pkgs"
if [ -z "$runtime_pkgs" ]; then
    finding "no 'apt-get install -y --no-install-recommends' line in the runtime stage"
elif [ ! -x "$bin" ]; then
    finding "no binary $bin to check the runtime libraries against: run make, or set FANOUT_BIN"
else
    needed=""
    for soname in $(objdump -p "$bin" | awk '$1 == "NEEDED" { print $2 }'); do
        path=$(ldd "$bin" | awk -v s="$soname" '$1 == s { print $3 }')
        # dpkg knows a file by one path: /lib/... or /usr/lib/... (merged /usr), link or target.
        pkg=""
        real=$(readlink -f "$path" 2>/dev/null)
        for p in "$path" "$real" "/usr${path#/usr}" "/usr${real#/usr}" "${path#/usr}" "${real#/usr}"; do
            [ -n "$pkg" ] || pkg=$(dpkg -S "$p" 2>/dev/null | head -n 1 | cut -d: -f1)
        done
        if [ -z "$pkg" ]; then
            finding "$bin links $soname, which no Debian package provides here"
            continue
        fi
        case " $base_pkgs " in *" $pkg "*) echo " $soname: $pkg (in the base image)"; continue ;; esac
        needed="$needed $pkg"
        echo " $soname: $pkg"
        echo " $runtime_pkgs " | grep -q " $pkg " || finding "the runtime stage does not install $pkg ($soname)"
    done
    for pkg in $runtime_pkgs; do
        echo " $needed " | grep -q " $pkg " || finding "the runtime stage installs $pkg, which $bin does not link"
    done
fi

# 5. Host paths of the compose bind mounts ("- ./path:/target" lines) and the default wrk script.
show "bind mount sources of docker-compose.yml; default WRK_SCRIPT"
sed -n 's/^[[:space:]]*- \(\.\/[^:]*\):.*/\1/p' docker-compose.yml >"$tmp/mounts"
while read -r src; do
    [ -e "$src" ] || finding "docker-compose.yml mounts $src, which does not exist"
done <"$tmp/mounts"
# shellcheck disable=SC2016 # the ${WRK_SCRIPT:-...} in this sed pattern is compose's text, not the shell's
script=$(sed -n 's/.*\${WRK_SCRIPT:-\([^}]*\)}.*/\1/p' docker-compose.yml)
if [ -z "$script" ] || [ ! -f "$script" ]; then
    finding "the default wrk script '$script' does not exist"
fi

if [ "$findings" != 0 ]; then
    echo "check-container: $findings finding(s)"
    exit 1
fi
echo "check-container: no findings"
