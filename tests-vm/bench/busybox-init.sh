#!/bin/busybox sh
# boot-bench's baseline: a busybox shell PID 1 doing what a hypeman guest's
# early shell init did before a compiled init took over — mount the kernel
# file systems, wait for the disks, mount the image read-only under an ext4
# overlay disk, read config.json from the config disk, bring up eth0 when
# asked, chroot into the new root, run the app, report its exit and power
# off. Written for the benchmark (it parses only the config keys the
# benchmark sets), not for use.
B=/bin/busybox
$B mount -t devtmpfs devtmpfs /dev
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
/vm-helper stamp init
fail() { echo "HYPEMAN-EXIT code=1 message=\"init: $*\""; $B poweroff -f; }
for d in vda vdb vdc; do
  i=0
  while [ ! -b /dev/$d ]; do
    i=$((i + 1)); [ $i -gt 10000 ] && fail "no /dev/$d"
    $B usleep 1000
  done
done
$B mkdir -p /lower /overlay /newroot /config
$B mount -t ext4 -o ro,noload /dev/vda /lower || fail "root disk"
$B mount -t ext4 /dev/vdb /overlay || fail "overlay disk"
$B mkdir -p /overlay/upper /overlay/work
$B mount -t overlay overlay -o lowerdir=/lower,upperdir=/overlay/upper,workdir=/overlay/work /newroot || fail overlayfs
$B mount -t ext4 -o ro /dev/vdc /config || fail "config disk"
# One line, no blanks (the benchmark's values have none).
cfg=$($B tr -d ' \n\t' < /config/config.json)
$B umount /config
key() { echo "$cfg" | $B sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p"; }
cmd=$(echo "$cfg" | $B sed -n 's/.*"cmd":\[\([^]]*\)\].*/\1/p' | $B sed 's/","/ /g; s/"//g')
if [ "$(key network_enabled)" = true ]; then
  $B ip link set lo up
  $B ip link set eth0 up
  $B ip addr add "$(key guest_ip)/$(key guest_cidr)" dev eth0 || fail network
  $B ip route add default via "$(key guest_gw)" || fail network
  echo "nameserver $(key guest_dns)" > /newroot/etc/resolv.conf
fi
$B mount --move /dev /newroot/dev
$B mount --move /proc /newroot/proc
$B mount --move /sys /newroot/sys
$B mount -t tmpfs tmpfs /newroot/run
echo "HYPEMAN-PROGRAM-START ts=0 mode=exec"
[ -n "$cmd" ] || fail "no cmd in config.json"
$B chroot /newroot $cmd
code=$?
echo "HYPEMAN-EXIT code=$code message=\"\""
$B sync
$B poweroff -f
