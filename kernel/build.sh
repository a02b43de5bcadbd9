#!/usr/bin/env bash
# build.sh — a microVM kernel from Debian's linux-source-6.1, configured from
# the fragments in kernel/fragments/ (see kernel/README.md).
#
#   bash kernel/build.sh [OUT_DIR]            # vmlinux + bzImage (~5-8 min on 2 cores)
#   bash kernel/build.sh --config-only        # configure and check only (~1 min)
#   bash kernel/build.sh --fragments "base x86_64 debug" [OUT_DIR]
#   bash kernel/build.sh --fragment-dir DIR --config-only   # other fragments (tests)
#
# `make allnoconfig`, the fragments merged with scripts/kconfig/merge_config.sh,
# `make olddefconfig`; then every option a fragment asks for, and every option
# in kernel/required.config (what the boot needs built in), must be =y in the
# final .config, or the build fails naming each one. The configured tree is
# cached outside the checkout ($GUESTINIT_KERNEL_CACHE, default
# ~/.cache/guestinit-kernel) under the sha256 of the fragments, required.config
# and the source version, so a second run is instant. Output (default
# <repo>/.cache/kernel-build): vmlinux, bzImage, config, release and
# kernel-headers.tar.gz (for out-of-tree modules: DKMS, GPU drivers) and
# manifest.json (sha256 and size of each; the catalog entry).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT="$HERE/../.cache/kernel-build"
FRAGMENTS="base x86_64"
FRAGMENT_DIR="$HERE/fragments"
CONFIG_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --config-only) CONFIG_ONLY=1; shift ;;
    --fragments) FRAGMENTS="$2"; shift 2 ;;
    --fragment-dir) FRAGMENT_DIR=$(cd "$2" && pwd); shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    -*) echo "build.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) OUT="$1"; shift ;;
  esac
done

need=(linux-source-6.1 bc bison flex libelf-dev dwarves build-essential)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

files=()
for f in $FRAGMENTS; do
  [ -f "$FRAGMENT_DIR/$f.config" ] || { echo "build.sh: no fragment $FRAGMENT_DIR/$f.config" >&2; exit 2; }
  files+=("$FRAGMENT_DIR/$f.config")
done
version=$(dpkg-query -W -f='${Version}' linux-source-6.1)
key=$( { echo "$version"; cat "${files[@]}" "$HERE/required.config"; } | sha256sum | cut -c1-16)
cache="${GUESTINIT_KERNEL_CACHE:-$HOME/.cache/guestinit-kernel}"
SRC="$cache/src-$version"
BUILD="$cache/build-$key"

# The source, unpacked once per version (shared by every configuration).
if [ ! -f "$SRC/.unpacked" ]; then
  rm -rf "$SRC" && mkdir -p "$SRC"
  tar -xJf /usr/src/linux-source-6.1.tar.xz -C "$SRC" --strip-components=1
  touch "$SRC/.unpacked"
fi

# Configure out of tree, then check.
if [ ! -f "$BUILD/.configured" ]; then
  rm -rf "$BUILD" && mkdir -p "$BUILD"
  make -s -C "$SRC" O="$BUILD" ARCH=x86_64 allnoconfig >/dev/null
  (cd "$BUILD" && "$SRC/scripts/kconfig/merge_config.sh" -m -O "$BUILD" "$BUILD/.config" "${files[@]}" >/dev/null)
  make -s -C "$SRC" O="$BUILD" ARCH=x86_64 olddefconfig >/dev/null
  touch "$BUILD/.configured"
fi
failed=0
for f in "${files[@]}" "$HERE/required.config"; do
  while IFS= read -r line; do
    case "$line" in CONFIG_*=y) ;; *) continue ;; esac
    if ! grep -qx "$line" "$BUILD/.config"; then
      echo "kernel config: ${line%=y} is not built in (asked by $(basename "$f")): a dependency is missing or no fragment enables it" >&2
      failed=1
    fi
  done < "$f"
done
if [ "$failed" -ne 0 ]; then
  rm -f "$BUILD/.configured"
  exit 1
fi
if [ "$CONFIG_ONLY" -eq 1 ]; then
  echo "$BUILD/.config"
  exit 0
fi

# kernel-headers.tar.gz: one tree (linux-headers-<release>/) an out-of-tree
# module builds against with `make -C <tree> M=<dir> modules`: the source's
# Makefiles, Kconfig, scripts and headers, and the build's generated headers,
# .config, Module.symvers and host tools (modpost, fixdep, objtool).
headers_tarball() {
  make -s -C "$SRC" O="$BUILD" ARCH=x86_64 -j"$(nproc)" modules_prepare
  make -s -C "$SRC" O="$BUILD" ARCH=x86_64 -j"$(nproc)" modules
  local stage="$BUILD/headers-stage" name="linux-headers-$release"
  rm -rf "$stage" && mkdir -p "$stage/$name"
  (cd "$SRC" && find Makefile Kbuild Kconfig scripts include arch/x86 \
      -path arch/x86/boot -prune -o -path 'arch/x86/*/*.c' -prune -o -print 2>/dev/null \
      | cpio -pdm --quiet "$stage/$name")
  (cd "$BUILD" && find .config Module.symvers include scripts arch/x86/include/generated \
      tools/objtool/objtool -name '*.o' -prune -o -print 2>/dev/null \
      | cpio -pdmu --quiet "$stage/$name")
  tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -czf "$BUILD/kernel-headers.tar.gz" "$name"
  rm -rf "$stage"
}

# manifest.json: what was built from what, with the sha256 of each output —
# the catalog entry the system manager imports (`kernel import <folder>`).
manifest() {
  local files="" f
  for f in vmlinux bzImage config kernel-headers.tar.gz; do
    files="$files${files:+,}
    \"$f\": {\"sha256\": \"$(sha256sum "$OUT/$f" | cut -d' ' -f1)\", \"size\": $(stat -c %s "$OUT/$f")}"
  done
  printf '{\n  "kind": "kernel",\n  "release": "%s",\n  "arch": "x86_64",\n  "source": "linux-source-6.1 %s",\n  "fragments": "%s",\n  "config_key": "%s",\n  "files": {%s\n  }\n}\n' \
    "$release" "$version" "$FRAGMENTS" "$key" "$files"
}

mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
if [ ! -f "$BUILD/vmlinux" ] || [ ! -f "$BUILD/arch/x86/boot/bzImage" ]; then
  make -s -C "$SRC" O="$BUILD" ARCH=x86_64 -j"$(nproc)" vmlinux bzImage
fi
release=$(make -s -C "$SRC" O="$BUILD" ARCH=x86_64 kernelrelease)
if [ ! -f "$BUILD/kernel-headers.tar.gz" ]; then
  headers_tarball
fi
cp "$BUILD/vmlinux" "$OUT/vmlinux"
cp "$BUILD/arch/x86/boot/bzImage" "$OUT/bzImage"
cp "$BUILD/.config" "$OUT/config"
cp "$BUILD/kernel-headers.tar.gz" "$OUT/kernel-headers.tar.gz"
echo "$release" >"$OUT/release"
manifest >"$OUT/manifest.json"
echo "built $release in $OUT (cache $BUILD)" >&2
