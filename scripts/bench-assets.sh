#!/bin/bash
# Build the guest initramfs of the I/O benchmarks (bench/blk, bench/net):
#   initrd-bench.gz   initrd-cloud.gz (busybox + virtio modules + /init) plus fio and iperf3
# into ${KEMU_CACHE:-$HOME/.cache/kemu}, outside git. fio and iperf3 are Debian's packages,
# installed on this machine (apt-get install -y); the guest gets their binaries and the ldd
# closure of shared libraries, each at the path the dynamic loader looks for it.
# Needs initrd-cloud.gz: run scripts/guest-assets.sh first.
# Idempotent: skips the build when this script, initrd-cloud.gz and the two packages' versions
# are the ones the existing initrd-bench.gz was made from.
set -euo pipefail

CACHE=${KEMU_CACHE:-$HOME/.cache/kemu}
OUT=$CACHE/initrd-bench.gz
BASE=$CACHE/initrd-cloud.gz
STAMP=$CACHE/.stamp-bench
TOOLS="/usr/bin/fio /usr/bin/iperf3"

log() { echo "bench-assets: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ -s "$BASE" ] || die "$BASE missing (run scripts/guest-assets.sh first)"

# 1. The packages, on this machine.
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }
missing=
for p in fio iperf3; do installed $p || missing="$missing $p"; done
if [ -n "$missing" ]; then
    log "installing$missing"
    # shellcheck disable=SC2086
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null; then
        # Package lists may be missing or stale on a fresh machine.
        apt-get update -qq
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null ||
            die "apt-get install$missing failed"
    fi
fi
for t in $TOOLS; do [ -x "$t" ] || die "$t missing after installing its package"; done
for tool in cpio gzip ldd sha256sum; do
    command -v $tool >/dev/null || die "$tool missing"
done

# 2. Up to date?
want=$( {
    sha256sum "${BASH_SOURCE[0]}" "$BASE" | cut -d' ' -f1
    dpkg-query -W -f='${Package} ${Version}\n' fio iperf3
} | sha256sum | cut -d' ' -f1)
if [ -s "$OUT" ] && [ "$(cat "$STAMP" 2>/dev/null || true)" = "$want" ]; then
    echo "$OUT"
    exit 0
fi

# 3. Build: the cloud initramfs, unpacked, plus the tools and their libraries.
log "building $OUT"
WORK=$(mktemp -d "$CACHE/bench-work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/root
mkdir -p "$ROOT"
gzip -dc "$BASE" | (cd "$ROOT" && cpio -id --quiet --no-absolute-filenames)
[ -x "$ROOT/init" ] || die "$BASE has no /init"

# Every library ldd resolves ("name => /path (addr)") and the loader itself ("/path (addr)"),
# copied (symlinks followed) to the path ldd printed: the binaries' PT_INTERP, the loader's
# default directories and the libraries' RUNPATHs (ceph's private directory) all find them there.
libs=$(for t in $TOOLS; do
           ldd "$t" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'
           if ldd "$t" | grep -q 'not found'; then
               ldd "$t" | grep 'not found' >&2
               die "$t: unresolved libraries"
           fi
       done | sort -u)
[ -n "$libs" ] || die "ldd found no libraries"
n=0
for f in $TOOLS $libs; do
    # /lib is a real directory in the busybox root (lib/modules): never follow a host
    # merged-/usr symlink when creating the destination directory.
    dst=$ROOT$f
    mkdir -p "$(dirname "$dst")"
    cp -L "$f" "$dst"
    n=$((n + 1))
done
# Ask the loader to confirm nothing is missing for either tool inside the new root.
for t in $TOOLS; do
    if command -v chroot >/dev/null && [ "$(id -u)" = 0 ]; then
        chroot "$ROOT" "$t" --version >/dev/null 2>&1 ||
            die "$t does not run inside the new root: $(chroot "$ROOT" "$t" --version 2>&1 | head -3)"
    fi
done
log "added $n files ($(du -sh "$ROOT" | cut -f1) root)"

(cd "$ROOT" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) |
    gzip -6n > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "$want" > "$STAMP"
log "$(du -h "$OUT" | cut -f1) $OUT"
echo "$OUT"
