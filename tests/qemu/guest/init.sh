#!/bin/sh
# /init of the emulated fleetlet board (the whole root file system is the initramfs).
# Mounts the kernel file systems, loads the virtio modules, brings up eth0 on QEMU's user
# network, mounts the host's 9p share at /mnt/host, then runs /mnt/host/boot.sh (written by
# the test harness for this boot) as the board's one service. PID 1 never exits: when
# boot.sh ends, the board powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm /run /tmp /mnt/host
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
echo "fleetlet-board: kernel up $(cut -d' ' -f1 /proc/uptime)s" > /dev/console
for m in virtio_mmio virtio-rng virtio_net 9pnet_virtio 9p; do modprobe "$m" 2>/dev/console; done
hostname fleetlet-board
ip link set lo up
# QEMU user networking (slirp, restrict=on): the guest address is fixed, nothing outside
# QEMU is reachable except the explicit guestfwd/hostfwd rules of the harness.
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=none host0 /mnt/host 2>/dev/console
echo "fleetlet-board: network and 9p up $(cut -d' ' -f1 /proc/uptime)s" > /dev/console
if [ -x /mnt/host/boot.sh ]; then
    /mnt/host/boot.sh > /dev/console 2>&1
    echo "fleetlet-board: boot.sh exited with $?" > /dev/console
else
    echo "fleetlet-board: no /mnt/host/boot.sh" > /dev/console
fi
sync
echo o > /proc/sysrq-trigger
poweroff -f
while :; do sleep 3600; done
