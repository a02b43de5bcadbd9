#!/usr/bin/env bash
# Installs everything the build and the tests need on a fresh Debian 12 machine:
# Debian packages (QEMU, busybox-static, e2fsprogs, erofs-utils, cpio, lz4, zstd,
# kmod, xz, docker-registry, python3, strace) and vhost-device-vsock (cargo). Idempotent and quiet when done.
set -euo pipefail

PACKAGES=(qemu-system-x86 qemu-utils busybox-static e2fsprogs erofs-utils cpio lz4 zstd
  gzip xz-utils util-linux kmod dpkg apt gcc libc6-dev docker-registry python3 skopeo debootstrap strace)
VHOST_VSOCK_VERSION=0.3.0

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! vhost-device-vsock --version 2>/dev/null | grep -q "$VHOST_VSOCK_VERSION"; then
  echo "setup: installing vhost-device-vsock $VHOST_VSOCK_VERSION (cargo)" >&2
  cargo install --locked --quiet vhost-device-vsock --version "$VHOST_VSOCK_VERSION"
fi

# The guest kernel fixture (Debian's stock kernel, never the host's /boot).
bash "$(dirname "$0")/fetch-kernel.sh" >/dev/null

# The microVM kernel the VM tests boot by default (kernel/; ~6-8 min the
# first time, then cached under ~/.cache/guestinit-kernel by its inputs).
bash "$(dirname "$0")/../kernel/build.sh" >/dev/null

# The Debian rootfs with systemd the systemd-mode VM test boots (debootstrap,
# ~3 min the first time, cached under ~/.cache/guestinit-rootfs by its inputs).
bash "$(dirname "$0")/debian-rootfs.sh" >/dev/null
