#!/usr/bin/env bash
# Runs the test binaries on another Linux kernel: a Debian kernel package,
# booted by qemu with the binaries in an initramfs. Without KVM (this VM has
# none) qemu emulates the CPU, about 20x slower, so the longest tests are
# left out by default.
#
#   bash scripts/old-kernel.sh                       # Debian's 6.1
#   KERNEL=linux-image-6.1.0-47-cloud-amd64-unsigned bash scripts/old-kernel.sh
#   SKIP="soak net_c10k" ONLY="lib net_echo" bash scripts/old-kernel.sh
#
# ONLY: test binaries to run (the crate's unit tests are `lib`); SKIP: ones
# to leave out (default: soak net_c10k). The report is
# target/old-kernel/report.txt; the script fails if any binary failed.
# Installs qemu-system-x86, busybox-static and cpio with apt-get if missing;
# the kernel package is downloaded and unpacked, never installed.
set -euo pipefail
cd "$(dirname "$0")/.."
kernel_pkg="${KERNEL:-linux-image-6.1.0-47-cloud-amd64-unsigned}"
skip="${SKIP-soak net_c10k}"
only="${ONLY:-}"
work="target/old-kernel"
mkdir -p "$work"

need() {
    command -v "$1" >/dev/null && return
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need qemu-system-x86_64 qemu-system-x86
need busybox busybox-static
need cpio cpio

echo "== kernel $kernel_pkg"
if [[ ! -d "$work/kernel-$kernel_pkg" ]]; then
    rm -rf "$work/download" && mkdir -p "$work/download"
    (cd "$work/download" && apt-get download "$kernel_pkg" >/dev/null)
    dpkg-deb -x "$work"/download/*.deb "$work/kernel-$kernel_pkg"
fi
vmlinuz="$(ls "$work/kernel-$kernel_pkg"/boot/vmlinuz-* | head -1)"

echo "== test binaries"
cargo test --no-run --lib --tests --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*"' | sed 's/"executable":"//; s/"$//' >"$work/binaries"
root="$work/initramfs"
rm -rf "$root" && mkdir -p "$root"/{bin,tests,proc,sys,dev,tmp,etc,lib64,usr/lib}
# Copies the shared libraries binary $1 needs into the initramfs, at the
# same paths.
copy_libs() {
    ldd "$1" | grep -o '/[^ ]*' | while read -r lib; do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
}
names=()
while read -r binary; do
    name="$(basename "$binary" | sed 's/-[0-9a-f]*$//')"
    [[ "$name" == ringshard ]] && name=lib
    [[ -n "$only" && " $only " != *" $name "* ]] && continue
    [[ " $skip " == *" $name "* ]] && continue
    cp "$binary" "$root/tests/$name"
    names+=("$name")
    copy_libs "$binary"
done <"$work/binaries"
# Host tools some tests run (driver_fallback drops privileges with setpriv).
for tool in setpriv; do
    cp "$(command -v "$tool")" "$root/bin/$tool"
    copy_libs "$(command -v "$tool")"
done
cp "$(command -v busybox)" "$root/bin/busybox"
for tool in sh mount ip poweroff cat echo sleep; do ln -s busybox "$root/bin/$tool"; done
printf 'root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
cat >"$root/init" <<INIT
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
ip link set lo up
ulimit -n 20000
echo "=== kernel \$(cat /proc/sys/kernel/osrelease)"
cd /tests
for t in ${names[*]}; do
    echo "=== \$t"
    ./\$t 2>&1
    echo "=== \$t exit \$?"
done
echo "=== all done"
poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initramfs.cpio.gz"

echo "== booting (${#names[@]} binaries; emulated, this takes a while)"
log="$work/console.log"
timeout "${TIMEOUT:-7200}" qemu-system-x86_64 -machine q35 -cpu max -smp 2 -m 8G \
    -accel tcg,thread=multi -kernel "$vmlinuz" -initrd "$work/initramfs.cpio.gz" \
    -append "console=ttyS0 panic=-1 quiet" -nographic -no-reboot >"$log" 2>&1 || true
# The console's escape sequences out, then the lines that matter.
tr -d '\r' <"$log" | sed 's/\x1bc//g; s/\x1b\[[0-9;?]*[a-zA-Z]//g' |
    grep -E '^=== |^test result|^test .* FAILED|panicked at' >"$work/report.txt" || true
cat "$work/report.txt"
grep -q '^=== all done' "$work/report.txt" || { echo "the guest did not finish (see $log)"; exit 1; }
if grep -E '^=== .* exit [1-9]' "$work/report.txt"; then
    echo "== some test binaries failed on $(grep -m1 '^=== kernel' "$work/report.txt")"
    exit 1
fi
echo "== every test binary passed on $(grep -m1 '^=== kernel' "$work/report.txt")"
