#!/bin/sh
# Install every Debian package kemu needs to build, test and prepare guests.
# Idempotent and quiet: apt is only touched when something is missing.
set -eu

PACKAGES="
meson
ninja-build
pkg-config
gcc
clang
clang-format
libclang-rt-14-dev
libcmocka-dev
libslirp-dev
libglib2.0-dev
liburing-dev
libcapstone-dev
zlib1g-dev
libzstd-dev
libjansson-dev
python3-pytest
qemu-system-x86
qemu-utils
busybox-static
cpio
zstd
xz-utils
gzip
kmod
e2fsprogs
iproute2
time
acpica-tools
"

missing=""
for p in $PACKAGES; do
    # "install ok installed" is the only state that means the package is usable.
    st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$st" = "install ok installed" ] || missing="$missing $p"
done

[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi

echo "deps.sh: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Quiet when it works, the whole apt log when it does not.
# shellcheck disable=SC2086
if ! { $SUDO apt-get update -qq && \
       $SUDO apt-get install -y -qq --no-install-recommends $missing; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "deps.sh: apt-get failed" >&2
    exit 1
fi
