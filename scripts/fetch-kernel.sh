#!/usr/bin/env bash
# fetch-kernel.sh [CACHE_DIR]
#
# Fetches Debian 12's current 6.1 kernel (linux-image-6.1.0-NN-amd64) into a
# cache folder without installing it, and prints its release (kver) on stdout.
#
#   <cache>/<kver>/linux-image-<kver>_*.deb   the downloaded package
#   <cache>/<kver>/root/                       dpkg -x of it, with depmod run on it
#   <cache>/<kver>/root/lib/modules/<kver>/    modules + modules.dep/.softdep/.alias
#   <cache>/<kver>/root/boot/vmlinuz-<kver>    the bzImage
#   <cache>/<kver>/vmlinux                     the PVH-bootable ELF inside vmlinuz
#
# CACHE_DIR defaults to <repo>/.cache/kernel. Set KVER to pin a release instead of
# resolving linux-image-amd64, FETCH_KERNEL_REFRESH=1 to re-resolve it even when a
# release is cached. Idempotent: once <cache>/<kver>/.complete exists the
# script only prints the kver (no network, no apt). Never touches the host's /boot
# or /lib/modules. Progress goes to stderr; stdout carries only the kver.
set -euo pipefail

log() { echo "fetch-kernel: $*" >&2; }
die() { log "error: $*"; exit 1; }

repo_root() { cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd; }
CACHE=${1:-"$(repo_root)/.cache/kernel"}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)

# The release named by the metapackage's dependency, e.g. 6.1.0-31-amd64.
resolve_from_apt() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    sed -n 's/.*Depends: linux-image-\(6\.1\.[0-9]*-[0-9]*-amd64\)$/\1/p' | head -n1
}

# Fast path: a completed cache entry (newest first) answers without apt.
cached_kver() {
  local d
  for d in $(ls -1d "$CACHE"/6.1.*-amd64 2>/dev/null | sort -V -r); do
    [ -f "$d/.complete" ] && { basename "$d"; return 0; }
  done
  return 1
}

resolve_kver() {
  if [ -n "${KVER:-}" ]; then echo "$KVER"; return; fi
  local k
  k=$(resolve_from_apt)
  if [ -z "$k" ]; then
    log "apt has no package lists yet: running apt-get update"
    apt-get update -qq >&2 || die "apt-get update failed"
    k=$(resolve_from_apt)
  fi
  [ -n "$k" ] || die "cannot resolve linux-image-amd64 to a 6.1 kernel package"
  echo "$k"
}

need_tools() {
  local missing=()
  command -v depmod >/dev/null || [ -x /sbin/depmod ] || missing+=(kmod)
  command -v xz >/dev/null || missing+=(xz-utils)
  [ "${#missing[@]}" -eq 0 ] && return
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >&2 || die "cannot install ${missing[*]}"
}

download_deb() {
  local kver=$1 dir=$2
  ls "$dir"/linux-image-"$kver"_*.deb >/dev/null 2>&1 && return
  log "downloading linux-image-$kver"
  (cd "$dir" && apt-get download -qq "linux-image-$kver" >&2) ||
    { apt-get update -qq >&2 && (cd "$dir" && apt-get download -qq "linux-image-$kver" >&2); } ||
    die "apt-get download linux-image-$kver failed"
}

unpack_deb() {
  local kver=$1 dir=$2
  rm -rf "$dir/root.tmp"
  dpkg -x "$(ls "$dir"/linux-image-"$kver"_*.deb | head -n1)" "$dir/root.tmp"
  local depmod
  depmod=$(command -v depmod || echo /sbin/depmod)
  "$depmod" -b "$dir/root.tmp" "$kver"
  rm -rf "$dir/root"
  mv "$dir/root.tmp" "$dir/root"
}

# The bzImage's payload is an xz stream: find its magic and decompress from there,
# ignoring whatever follows the stream.
extract_vmlinux() {
  local kver=$1 dir=$2 img off
  img="$dir/root/boot/vmlinuz-$kver"
  [ -f "$img" ] || die "no $img in the package"
  off=$(LC_ALL=C grep -obUaP '\xfd\x37\x7a\x58\x5a\x00' "$img" | head -n1 | cut -d: -f1)
  [ -n "$off" ] || die "no xz stream in $img"
  # xz stops at the end of its stream, so tail may die of SIGPIPE: judge xz alone.
  set +o pipefail
  tail -c +"$((off + 1))" "$img" | xz -dc --single-stream >"$dir/vmlinux.tmp"
  local xz_status=${PIPESTATUS[1]}
  set -o pipefail
  [ "$xz_status" -eq 0 ] || die "cannot decompress vmlinux from $img (xz exit $xz_status)"
  head -c 4 "$dir/vmlinux.tmp" | grep -q 'ELF' || die "decompressed payload is not an ELF"
  [ "$(stat -c %s "$dir/vmlinux.tmp")" -gt 1000000 ] || die "decompressed vmlinux is too small"
  mv "$dir/vmlinux.tmp" "$dir/vmlinux"
}

main() {
  if [ -z "${KVER:-}" ] && [ -z "${FETCH_KERNEL_REFRESH:-}" ] && kver=$(cached_kver); then echo "$kver"; return; fi
  kver=$(resolve_kver)
  local dir="$CACHE/$kver"
  if [ -f "$dir/.complete" ]; then echo "$kver"; return; fi
  need_tools
  mkdir -p "$dir"
  download_deb "$kver" "$dir"
  unpack_deb "$kver" "$dir"
  extract_vmlinux "$kver" "$dir"
  touch "$dir/.complete"
  log "cached $kver in $dir"
  echo "$kver"
}

# One fetch at a time per cache (setup, tests and benchmarks may overlap).
exec 9>"$CACHE/.lock"
flock 9
main
