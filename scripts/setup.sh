#!/usr/bin/env bash
# Installs every system package the build and the tests need on Debian 12.
# Idempotent: packages already present are not reinstalled.
set -euo pipefail

PACKAGES=(qemu-system-x86 qemu-utils busybox-static e2fsprogs erofs-utils cpio lz4 zstd
  gzip xz-utils util-linux kmod)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
