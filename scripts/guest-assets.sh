#!/bin/bash
# Build the guest assets kemu's system tests and benchmarks boot:
#   vmlinuz-cloud, vmlinuz-generic        Debian 6.1 kernels (bzImage)
#   initrd-cloud.gz, initrd-generic.gz    busybox + virtio modules + /init (kemu.run=<base64>)
#   testhost-initrd.gz                    initramfs of the KVM-capable test host (generic kernel)
# into ${KEMU_CACHE:-$HOME/.cache/kemu}, outside git. Everything comes from Debian packages
# (apt-get download + dpkg -x); nothing is installed on this machine.
# Idempotent: outputs that exist are kept, unless this script changed since they were built.
set -euo pipefail

CACHE=${KEMU_CACHE:-$HOME/.cache/kemu}
WORK=$CACHE/work
DEBS=$CACHE/debs   # kept across rebuilds: the downloads do not depend on this script
STAMP=$CACHE/.stamp

log() { echo "guest-assets: $*" >&2; }
die() { log "error: $*"; exit 1; }

mkdir -p "$CACHE"

# A change in this script invalidates everything it built.
self_sum=$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)
# Old outputs stay in place until their replacements are ready (others may be booting them).
rebuild=0
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$self_sum" ]; then
    rm -rf "$WORK"
    rebuild=1
fi
# Whether $1 must be (re)built.
need() { [ $rebuild = 1 ] || [ ! -s "$1" ]; }

OUTPUTS="vmlinuz-cloud vmlinuz-generic initrd-cloud.gz initrd-generic.gz testhost-initrd.gz"
all_there=1
for f in $OUTPUTS; do need "$CACHE/$f" && all_there=0; done
if [ $all_there = 1 ]; then
    echo "$CACHE"
    exit 0
fi

for tool in apt-get apt-cache dpkg cpio gzip depmod; do
    command -v $tool >/dev/null || die "$tool missing (run scripts/deps.sh)"
done

mkdir -p "$WORK"

# The real package behind a metapackage, e.g. linux-image-cloud-amd64 -> linux-image-6.1.0-56-cloud-amd64.
resolve_kernel_pkg() {
    local meta=$1 pkg
    pkg=$(apt-cache depends "$meta" 2>/dev/null |
          sed -n 's/^ *Depends: \(linux-image-6\.1\.[^ ]*\)$/\1/p' | head -n1)
    if [ -z "$pkg" ]; then
        # Package lists may be missing or stale on a fresh machine.
        apt-get update -qq >/dev/null 2>&1 || true
        pkg=$(apt-cache depends "$meta" 2>/dev/null |
              sed -n 's/^ *Depends: \(linux-image-6\.1\.[^ ]*\)$/\1/p' | head -n1)
    fi
    [ -n "$pkg" ] || die "cannot resolve a 6.1 kernel package from $meta"
    echo "$pkg"
}

# Download a package into $WORK/debs and unpack it into $2 (once).
fetch_and_extract() {
    local pkg=$1 dest=$2 deb
    [ -e "$dest/.extracted" ] && return 0
    mkdir -p "$DEBS"
    deb=$(ls "$DEBS/${pkg}_"*.deb 2>/dev/null | head -n1 || true)
    if [ -z "$deb" ]; then
        log "downloading $pkg"
        # apt's sandbox user cannot write to root-owned dirs; run the download where it may.
        (cd "$DEBS" && apt-get download -qq "$pkg" >/dev/null 2>&1) ||
            (cd "$DEBS" && apt-get download "$pkg") || die "apt-get download $pkg failed"
        deb=$(ls "$DEBS/${pkg}_"*.deb | head -n1)
    fi
    rm -rf "$dest"
    mkdir -p "$dest"
    dpkg -x "$deb" "$dest"
    touch "$dest/.extracted"
}

CLOUD_PKG=$(resolve_kernel_pkg linux-image-cloud-amd64)
GENERIC_PKG=$(resolve_kernel_pkg linux-image-amd64)
log "kernels: $CLOUD_PKG, $GENERIC_PKG"

fetch_and_extract "$CLOUD_PKG" "$WORK/cloud"
fetch_and_extract "$GENERIC_PKG" "$WORK/generic"
fetch_and_extract busybox-static "$WORK/busybox"

BUSYBOX=$WORK/busybox/bin/busybox
[ -x "$BUSYBOX" ] || die "busybox-static did not contain bin/busybox"

kernel_version() { ls "$1/lib/modules" | head -n1; }

# ---------------------------------------------------------------------------------------------
# Modules: resolve names (with dependencies, in load order) through modules.dep.

declare -A MOD_PATH MOD_DEPS MOD_SEEN
MOD_ORDER=()

modname() { local b=${1##*/}; b=${b%%.ko*}; echo "${b//-/_}"; }

load_modules_dep() {
    local moddir=$1 line path deps d
    MOD_PATH=(); MOD_DEPS=(); MOD_SEEN=(); MOD_ORDER=()
    while IFS= read -r line; do
        path=${line%%:*}
        deps=${line#*:}
        local n; n=$(modname "$path")
        MOD_PATH[$n]=$path
        local dn=""
        for d in $deps; do dn="$dn $(modname "$d")"; done
        MOD_DEPS[$n]=$dn
    done < "$moddir/modules.dep"
}

# Depth-first: dependencies before the module itself.
visit_module() {
    local n=$1 d
    [ -n "${MOD_SEEN[$n]:-}" ] && return 0
    MOD_SEEN[$n]=1
    for d in ${MOD_DEPS[$n]}; do visit_module "$d"; done
    MOD_ORDER+=("$n")
}

# Copy the wanted modules (and dependencies) of kernel tree $1 into initramfs root $2,
# decompressed, and write their load order to $2/lib/modules/load-order.
install_modules() {
    local ktree=$1 root=$2; shift 2
    local kver moddir n src dst
    kver=$(kernel_version "$ktree")
    moddir=$ktree/lib/modules/$kver
    # modules.dep is made by depmod at install time, so dpkg -x does not give it.
    [ -s "$moddir/modules.dep" ] || depmod -b "$ktree" "$kver" ||
        die "depmod failed for $kver"
    load_modules_dep "$moddir"
    for n in "$@"; do
        n=${n//-/_}
        if [ -n "${MOD_PATH[$n]:-}" ]; then
            visit_module "$n"
        elif grep -q "/${n}.ko\|/${n//_/-}.ko" "$moddir/modules.builtin" 2>/dev/null; then
            :   # built into this kernel
        else
            log "note: module $n not found for $kver"
        fi
    done
    mkdir -p "$root/lib/modules/$kver"
    : > "$root/lib/modules/load-order"
    for n in "${MOD_ORDER[@]}"; do
        src=$moddir/${MOD_PATH[$n]}
        dst=$root/lib/modules/$kver/$n.ko
        case $src in
            *.ko.xz)  xz -dc "$src" > "$dst" ;;
            *.ko.zst) zstd -qdc "$src" > "$dst" ;;
            *.ko.gz)  gzip -dc "$src" > "$dst" ;;
            *)        cp "$src" "$dst" ;;
        esac
        echo "$kver/$n" >> "$root/lib/modules/load-order"
    done
}

# A bare root: busybox with every applet linked, and a console node so /init has a stdin/stdout
# before devtmpfs is mounted.
make_root() {
    local root=$1 applet
    rm -rf "$root"
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,root,mnt,lib/modules}
    cp "$BUSYBOX" "$root/bin/busybox"
    for applet in $("$BUSYBOX" --list-full); do
        [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
    done
    mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true
    mknod -m 666 "$root/dev/null" c 1 3 2>/dev/null || true
    echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
    echo "root:x:0:" > "$root/etc/group"
}

pack_root() {
    local root=$1 out=$2
    (cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) |
        gzip -9n > "$out.tmp"
    mv "$out.tmp" "$out"
}

GUEST_MODULES="virtio virtio_ring virtio_pci virtio_pci_modern_dev virtio_pci_legacy_dev virtio_mmio
virtio_blk virtio_net net_failover failover virtio_console virtio_rng virtio_balloon virtio_scsi
crc32c_generic ext4 button evdev"

TESTHOST_MODULES="irqbypass kvm ccp kvm-amd virtio_ring virtio virtio_pci_modern_dev
virtio_pci_legacy_dev virtio_pci 9pnet 9pnet_virtio netfs fscache 9p virtio_blk crc16
crc32c_generic mbcache jbd2 ext4 tun vhost_net"

# ---------------------------------------------------------------------------------------------
# The guest's /init.

write_guest_init() {
    cat > "$1/init" <<'INIT'
#!/bin/sh
# kemu guest init: mount the basics, load virtio modules, then run kemu.run=<base64> or a shell.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root TERM=${TERM:-linux}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec 0<>/dev/console 1>&0 2>&0
echo KEMU-GUEST-INIT
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null
mount -t tmpfs tmpfs /tmp 2>/dev/null
mount -t tmpfs tmpfs /run 2>/dev/null
for m in $(cat /lib/modules/load-order); do
    insmod /lib/modules/$m.ko 2>/dev/null
done
ip link set lo up 2>/dev/null
hostname kemu-guest

run=
for w in $(cat /proc/cmdline); do
    case $w in kemu.run=*) run=${w#kemu.run=} ;; esac
done

if [ -n "$run" ]; then
    cmd=$(echo "$run" | base64 -d)
    sh -c "$cmd"
    echo "KEMU-RUN-EXIT=$?"
else
    echo "kemu guest shell; exit to reboot"
    setsid cttyhack sh -l
fi
sync
reboot -f
# reboot -f should not return; keep init alive if it does (init exiting panics the kernel).
while :; do sleep 3600; done
INIT
    chmod 755 "$1/init"
}

write_testhost_init() {
    cat > "$1/init" <<'INIT'
#!/bin/sh
# kemu test host init: KVM (kvm-amd under TCG's SVM), this machine's / over 9p at /host, a
# writable scratch disk as /host/tmp, then a command agent on the serial console.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec 0<>/dev/console 1>&0 2>&0
echo KEMU-TESTHOST-INIT
fail() { echo "KTH-FAIL: $*"; sleep 1; reboot -f; }

for m in $(cat /lib/modules/load-order); do
    insmod /lib/modules/$m.ko || echo "testhost: insmod $m failed"
done

mkdir -p /host
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 host /host || fail "9p mount"
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs devtmpfs /host/dev
mount -t devpts devpts /host/dev/pts 2>/dev/null
mount -t tmpfs tmpfs /host/dev/shm 2>/dev/null
mount -t tmpfs tmpfs /host/run
if [ -b /dev/vda ]; then
    mount -t ext4 /dev/vda /host/tmp || fail "scratch disk mount"
else
    mount -t tmpfs tmpfs /host/tmp
fi
chmod 1777 /host/tmp
ip link set lo up
hostname testhost

nonce=
for w in $(cat /proc/cmdline); do
    case $w in kth.nonce=*) nonce=${w#kth.nonce=} ;; esac
done
[ -e /dev/kvm ] || echo "testhost: warning: no /dev/kvm"

# Only emergencies on the console from here on: kernel lines would mix into command output.
echo 1 > /proc/sys/kernel/printk

# Console mode (testhost.py console): one interactive command with the console as its terminal.
ccmd=; ccwd=/
for w in $(cat /proc/cmdline); do
    case $w in
    kth.cmd=*) ccmd=$(echo "${w#kth.cmd=}" | base64 -d) ;;
    kth.cwd=*) ccwd=$(echo "${w#kth.cwd=}" | base64 -d) ;;
    esac
done
if [ -n "$ccmd" ]; then
    setsid cttyhack chroot /host /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/tmp TMPDIR=/tmp TERM=linux LANG=C.UTF-8 KEMU_TESTHOST=1 \
        /bin/sh -c 'cd "$1" 2>/dev/null || cd /tmp; eval "$2"' kth "$ccwd" "$ccmd"
    reboot -f
fi

# Every command runs with the same clean environment, chrooted into this machine's /.
in_host() {
    chroot /host /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/tmp TMPDIR=/tmp TERM=dumb LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 \
        KEMU_TESTHOST=1 "$@"
}

# Request (protocol 2): "<marker> <base64 path>": the path of a shell script the runner wrote on
# this machine's /, read here through the 9p share. The share is mounted without cache= (so
# cache=none): a file written just before the request is always found. Keeping the console line
# short keeps long commands off the UART and out of the shell's byte-by-byte `read`.
# Protocol 1 (older runners): "<marker> <base64 cwd> <base64 command> [<base64 env lines>]".
# Reply: "<marker>:BEGIN", the command's combined output, "<marker>:END:<status>". A marker seen
# before only gets "<marker>:DUP": the runner sends a request again when no BEGIN came, and the
# first copy may merely have been slow; a command never runs twice.
agent() {
    set -f    # request fields are split, never globbed
    mkdir -p /run/kth-done
    while IFS= read -r line; do
        set -- $line
        [ $# -ge 2 ] || continue    # blank (requests start with a newline) or garbled
        marker=$1
        case $marker in
        KTH-*[!0-9A-Za-z-]*) continue ;;
        KTH-?*) ;;
        *) continue ;;
        esac
        if [ -e "/run/kth-done/$marker" ]; then
            printf '\n%s:DUP\n' "$marker"
            continue
        fi
        : > "/run/kth-done/$marker"
        if [ $# -eq 2 ]; then
            req=$(echo "$2" | base64 -d)
            printf '\n%s:BEGIN\n' "$marker"
            if [ -n "$req" ] && [ -f "/host$req" ]; then
                in_host /bin/sh "$req" </dev/null 2>&1
                st=$?
            else
                echo "testhost: request file $req is not visible inside"
                st=125
            fi
        else
            cwd=$(echo "$2" | base64 -d)
            cmd=$(echo "$3" | base64 -d)
            envs=
            [ $# -ge 4 ] && envs=$(echo "$4" | base64 -d)
            printf '\n%s:BEGIN\n' "$marker"
            in_host /bin/sh -c 'cd "$1" 2>/dev/null ||
                { echo "testhost: $1 is not visible inside, running in /tmp" >&2; cd /tmp; }
                eval "$2"; eval "$3"' kth "$cwd" "$envs" "$cmd" </dev/null 2>&1
            st=$?
        fi
        printf '\n%s:END:%d\n' "$marker" "$st"
    done
}

# Raw, no echo: requests are single lines and nothing of them comes back.
stty raw -echo
# The protocol number lets testhost.py refuse an initrd older than itself with a clear message;
# older runners look for KTH-READY anywhere in a line and still find it.
echo "KTH-PROTO:2 KTH-READY:$nonce"

# The agent runs in a child process, never as PID 1. Orphans (a command's leftover background
# processes) are reparented to PID 1, and each one's exit sends PID 1 a SIGCHLD; busybox's
# `read`, interrupted by a signal while waiting for the rest of a line, throws away what it has
# read of it (the rest then looks like a malformed request). Requests arriving at such a moment
# got no reply at all. PID 1 now only waits here, and reaps the orphans while it waits.
( agent )
fail "agent input closed"
INIT
    chmod 755 "$1/init"
}

# ---------------------------------------------------------------------------------------------

build_guest_initrd() {
    local flavour=$1 out=$CACHE/initrd-$1.gz root=$WORK/root-$1
    need "$out" || return 0
    log "building $out"
    make_root "$root"
    # shellcheck disable=SC2086
    install_modules "$WORK/$flavour" "$root" $GUEST_MODULES
    write_guest_init "$root"
    pack_root "$root" "$out"
}

build_testhost_initrd() {
    local out=$CACHE/testhost-initrd.gz root=$WORK/root-testhost
    need "$out" || return 0
    log "building $out"
    make_root "$root"
    # shellcheck disable=SC2086
    install_modules "$WORK/generic" "$root" $TESTHOST_MODULES
    write_testhost_init "$root"
    pack_root "$root" "$out"
}

install_kernel() {
    local flavour=$1 out=$CACHE/vmlinuz-$1 src
    need "$out" || return 0
    src=$(ls "$WORK/$flavour"/boot/vmlinuz-* | head -n1)
    [ -n "$src" ] || die "no vmlinuz in the $flavour kernel package"
    cp "$src" "$out.tmp"
    mv "$out.tmp" "$out"
}

install_kernel cloud
install_kernel generic
build_guest_initrd cloud
build_guest_initrd generic
build_testhost_initrd

{
    echo "cloud=$CLOUD_PKG $(kernel_version "$WORK/cloud")"
    echo "generic=$GENERIC_PKG $(kernel_version "$WORK/generic")"
} > "$CACHE/versions"
echo "$self_sum" > "$STAMP"
echo "$CACHE"
