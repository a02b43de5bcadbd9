#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install what is needed, build init,
# the agent and the initramfs, boot a small busybox rootfs in QEMU running a demo
# command, show the console, and end with the app's exit code (parsed by
# host-sysmgr from HYPEMAN-EXIT). Extra arguments replace the demo command.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo build --release --locked -p init -p guest-agent
cargo build --release --locked -p initrd-builder -p host-sysmgr
BIN=target/x86_64-unknown-linux-gnu/release
KVER=$(bash scripts/fetch-kernel.sh)
OUT=target/demo
rm -rf "$OUT" && mkdir -p "$OUT/rootfs/bin" "$OUT/rootfs/etc"
"$BIN/initrd-builder" build --spec initrd-builder/specs/guestinit.toml \
  --kernel-release "$KVER" --unsigned --out "$OUT" >"$OUT/initrd.path"
INITRD=$(cat "$OUT/initrd.path")
cp /bin/busybox "$OUT/rootfs/bin/busybox"
for a in sh echo cat uname ls; do ln -s busybox "$OUT/rootfs/bin/$a"; done
echo "root:x:0:0:root:/root:/bin/sh" >"$OUT/rootfs/etc/passwd"

[ "${1:-}" = -- ] && shift
if [ "$#" -eq 0 ]; then
  set -- /bin/sh -c 'echo "hello from a microVM: $(uname -r)"; cat /proc/cmdline; exit 7'
fi
echo "== booting $KVER with $INITRD" >&2
set +e
"$BIN/host-sysmgr" run --kernel ".cache/kernel/$KVER/vmlinux" --initrd "$INITRD" \
  --rootfs "$OUT/rootfs" -- "$@"
code=$?
set -e
echo "== app exit code: $code" >&2
exit "$code"
