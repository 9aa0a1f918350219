#!/bin/bash
# Set up everything on a fresh Debian 12 machine and boot a demo guest to a busybox shell:
#   kemu -enable-kvm -M pc -m 512M -smp 2 -kernel vmlinuz -initrd initrd.gz \
#        -append "console=ttyS0" -nographic
# Where /dev/kvm cannot run Linux (PVM), the same command runs inside the test host.
# Leave the guest with `exit` (it reboots and -no-reboot ends kemu) or Ctrl-A x.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== /dev/kvm: $(sh scripts/kvm-kind.sh)"
bash scripts/deps.sh
sh scripts/build.sh >/dev/null
bash scripts/guest-assets.sh >/dev/null
CACHE=${KEMU_CACHE:-$HOME/.cache/kemu}
cmd=(./build/kemu -enable-kvm -M pc -m 512M -smp 2 -kernel "$CACHE/vmlinuz-cloud"
     -initrd "$CACHE/initrd-cloud.gz" -append "console=ttyS0 quiet" -nographic -no-reboot)
echo "== ${cmd[*]}"
if python3 tests/testhost/testhost.py can-run-linux >/dev/null 2>&1; then
    exec "${cmd[@]}"
fi
echo "== this /dev/kvm cannot run Linux: booting it inside the test host (takes ~30 s)"
exec python3 tests/testhost/testhost.py console -- "${cmd[@]}"
