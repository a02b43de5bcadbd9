#!/usr/bin/env bash
# A Debian 12 root filesystem with systemd (debootstrap, minbase), for the
# systemd-mode VM tests. Built once and cached under
# ${GUESTINIT_ROOTFS_CACHE:-~/.cache/guestinit-rootfs}/<key>/root, keyed by
# the suite, variant, packages and this script; prints that path.
#
#   bash scripts/debian-rootfs.sh            # build (or reuse) and print the path
set -euo pipefail
SUITE=bookworm
VARIANT=minbase
PACKAGES=systemd,systemd-sysv
MIRROR=${GUESTINIT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${GUESTINIT_ROOTFS_CACHE:-$HOME/.cache/guestinit-rootfs}
KEY=$( (echo "$SUITE $VARIANT $PACKAGES"; cat "$0") | sha256sum | cut -c1-16)
DIR="$CACHE/$KEY"
if [ -f "$DIR/.complete" ]; then
  echo "$DIR/root"
  exit 0
fi
command -v debootstrap >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
}
rm -rf "$DIR" && mkdir -p "$DIR"
debootstrap --variant="$VARIANT" --include="$PACKAGES" "$SUITE" "$DIR/root" "$MIRROR" >"$DIR/debootstrap.log" 2>&1 || {
  tail -20 "$DIR/debootstrap.log" >&2
  echo "debian-rootfs.sh: debootstrap failed (log: $DIR/debootstrap.log)" >&2
  exit 1
}
# A machine id of its own at first boot; no apt caches in the image.
: >"$DIR/root/etc/machine-id"
rm -rf "$DIR/root/var/cache/apt/archives/"*.deb "$DIR/root/var/lib/apt/lists/"*
touch "$DIR/.complete"
echo "$DIR/root"
