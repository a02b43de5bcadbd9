#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install what is needed (setup.sh
# also builds the microVM kernel from kernel/, cached), build init, the agent
# and host-sysmgr, import the kernel into the system manager's data folder,
# and boot a small busybox rootfs in QEMU with `host-sysmgr run --rootfs` —
# the default kernel and the initrd `ensure` builds from init and the agent —
# show the console, and end with the app's exit code (parsed by host-sysmgr
# from HYPEMAN-EXIT). Extra arguments replace the demo command.
# The data folder is $GUESTINIT_DATA_DIR (default: .cache/guestinit-data).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo build --release --locked -p init -p guest-agent
cargo build --release --locked -p host-sysmgr
BIN=target/x86_64-unknown-linux-gnu/release
export GUESTINIT_DATA_DIR="${GUESTINIT_DATA_DIR:-$PWD/.cache/guestinit-data}"
KVER=$(cat .cache/kernel-build/release)
KEY=$(sed -n 's/.*"config_key": "\([0-9a-f]\{8\}\).*/\1/p' .cache/kernel-build/manifest.json)
if ! "$BIN/host-sysmgr" kernel path "$KVER-$KEY" >/dev/null 2>&1; then
  "$BIN/host-sysmgr" kernel import .cache/kernel-build >/dev/null
fi
"$BIN/host-sysmgr" kernel set-default "$KVER-$KEY"

OUT=target/demo
rm -rf "$OUT" && mkdir -p "$OUT/rootfs/bin" "$OUT/rootfs/etc"
cp /bin/busybox "$OUT/rootfs/bin/busybox"
for a in sh echo cat uname ls; do ln -s busybox "$OUT/rootfs/bin/$a"; done
echo "root:x:0:0:root:/root:/bin/sh" >"$OUT/rootfs/etc/passwd"

[ "${1:-}" = -- ] && shift
if [ "$#" -eq 0 ]; then
  set -- /bin/sh -c 'echo "hello from a microVM: $(uname -r)"; cat /proc/cmdline; exit 7'
fi
echo "== booting with the defaults of $GUESTINIT_DATA_DIR" >&2
set +e
"$BIN/host-sysmgr" run --rootfs "$OUT/rootfs" -- "$@"
code=$?
set -e
echo "== app exit code: $code" >&2
exit "$code"
