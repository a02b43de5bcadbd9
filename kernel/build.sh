#!/usr/bin/env bash
# build.sh [OUT_DIR] — build a microVM kernel from Debian's linux-source-6.1:
# allnoconfig + microvm.config (all drivers init needs built in), vmlinux (PVH)
# and bzImage. Output (default <repo>/.cache/kernel-build): vmlinux, bzImage,
# config, release. The VM tests boot it when it is present.
# Takes ~5-8 minutes on 2 cores.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-"$HERE/../.cache/kernel-build"}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)

need=(linux-source-6.1 bc bison flex libelf-dev dwarves build-essential)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

SRC="$OUT/src"
if [ ! -f "$SRC/Makefile" ]; then
  rm -rf "$SRC" && mkdir -p "$SRC"
  tar -xJf /usr/src/linux-source-6.1.tar.xz -C "$SRC" --strip-components=1
fi
cd "$SRC"
make -s ARCH=x86_64 allnoconfig
grep -v '^#' "$HERE/microvm.config" | while read -r opt; do
  [ -n "$opt" ] && scripts/config --enable "$opt"
done
make -s ARCH=x86_64 olddefconfig
make -s ARCH=x86_64 -j"$(nproc)" vmlinux bzImage
cp vmlinux "$OUT/vmlinux"
cp arch/x86/boot/bzImage "$OUT/bzImage"
cp .config "$OUT/config"
make -s ARCH=x86_64 kernelrelease >"$OUT/release"
echo "built $(cat "$OUT/release") in $OUT" >&2
