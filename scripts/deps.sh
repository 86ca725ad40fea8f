#!/usr/bin/env bash
# `make deps`: everything bankboot needs on a Debian 12 build host, idempotent and fast when done.
#   1. apt packages (and the arm64/armhf architectures, for Debian's ARM kernels and libraries)
#   2. .venv with the pinned Python dependencies and bankboot itself (editable)
#   3. kernels, busybox and target Python sysroots in build/cache (`bankboot deps`)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  qemu-system-arm qemu-system-x86 qemu-user-static ipxe-qemu
  busybox-static squashfs-tools e2fsprogs dosfstools mtools fdisk kmod cpio
  zstd lz4 xz-utils binutils binutils-aarch64-linux-gnu binutils-arm-linux-gnueabihf cryptsetup-bin
  gcc-12-arm-linux-gnueabihf libc6-dev-armhf-cross libsodium23
  gcc-12 gcc-12-aarch64-linux-gnu lld-16
  nginx-light openssl
  u-boot-qemu u-boot-tools qemu-efi-aarch64 ovmf
  # fdtget: tests/host/test_devicetree.py reads back the rng-seed builder/lab/devicetree.py adds
  device-tree-compiler
  # images from containers and tarballs (docs/images.md), flashing with bmap; the tests' registry and
  # Debian rootfs (docker-registry is a daemon: not started, see policy-rc.d below)
  skopeo umoci squashfs-tools-ng bmap-tools docker-registry mmdebstrap
)
FOREIGN_ARCHES=(arm64 armhf)
PYTHON=${PYTHON:-python3}

say() { printf 'deps: %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# apt mirrors hiccup (a Packages file caught mid-sync fails its size check): retry with a pause.
apt_retry() {
  local n
  for n in 1 2 3 4 5; do
    if as_root env DEBIAN_FRONTEND=noninteractive "$@"; then return 0; fi
    say "'$*' failed (try $n of 5); retrying in $((n * 5)) s"
    sleep $((n * 5))
  done
  say "ERROR: '$*' kept failing"; return 1
}

apt_update() {
  # apt-get update exits 0 even when some index files failed ("File has unexpected size ... Mirror sync in
  # progress?"): retry a few times. If one index still fails, apt keeps the old copy of it; go on with a
  # warning, since a package that is really missing then fails loudly at install or download time.
  local log; log=$(mktemp)
  for n in 1 2 3; do
    if as_root apt-get update >"$log" 2>&1 && ! grep -q '^E:' "$log"; then rm -f "$log"; return 0; fi
    say "apt-get update had errors (try $n of 3):"; grep '^E:' "$log" | head -3 || true
    sleep $((n * 5))
  done
  if grep -q '^E: Failed to fetch' "$log" && ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
    say "WARNING: some package indexes could not be refreshed; using the copies apt already has"
    rm -f "$log"; return 0
  fi
  rm -f "$log"; say "ERROR: apt-get update kept failing"; return 1
}

need_update=0
for a in "${FOREIGN_ARCHES[@]}"; do
  if ! dpkg --print-foreign-architectures | grep -qx "$a"; then
    as_root dpkg --add-architecture "$a"; need_update=1
  fi
done
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The foreign package lists must be there for `apt-get download pkg:arm64`.
if [ $need_update -eq 1 ] || [ ${#missing[@]} -gt 0 ] || \
   ! ls /var/lib/apt/lists/*_binary-arm64_Packages* >/dev/null 2>&1 || \
   ! ls /var/lib/apt/lists/*_binary-armhf_Packages* >/dev/null 2>&1; then
  apt_update
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  # A daemon installed here (nginx, for `bankboot serve` and the network tests) must not be started: bankboot
  # runs its own on a port of its choosing. policy-rc.d says so to invoke-rc.d, for this install only.
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    guard=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$guard" >/dev/null && as_root chmod 755 "$guard"
    trap 'as_root rm -f "$guard"' EXIT
  fi
  apt_retry apt-get install -y --no-install-recommends "${missing[@]}"
  if [ -n "$guard" ]; then as_root rm -f "$guard"; trap - EXIT; fi
fi

# Python environment: rebuilt when the pins or the project metadata change.
stamp=.venv/.bankboot-deps
if [ ! -x .venv/bin/python ] || [ ! -f $stamp ] || [ requirements.txt -nt $stamp ] || [ pyproject.toml -nt $stamp ]; then
  say "setting up .venv"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  # compat mode: a plain path entry, so our qemu/ stays a namespace portion beside qemu.qmp.
  .venv/bin/pip install -q --disable-pip-version-check --no-deps --config-settings editable_mode=compat -e .
  touch $stamp
fi

# goosebit, the hawkBit-DDI server the `bankctl poll --hawkbit` tests and `make hawkbit-lab` run on loopback, in a
# venv of its own (builder/lab/goosebit.py): its pins (cryptography 50 needs cffi 2) clash with requirements.txt's.
gstamp=build/goosebit-venv/.bankboot-deps
if [ ! -x build/goosebit-venv/bin/uvicorn ] || [ ! -f $gstamp ] || [ requirements-goosebit.txt -nt $gstamp ]; then
  say "setting up build/goosebit-venv"
  [ -x build/goosebit-venv/bin/python ] || "$PYTHON" -m venv build/goosebit-venv
  build/goosebit-venv/bin/pip install -q --disable-pip-version-check -r requirements-goosebit.txt
  touch $gstamp
fi

# Kernels, busybox, Python sysroots: `bankboot deps` keeps its own stamps; skip it entirely when
# nothing it depends on changed since it last finished.
dstamp=build/cache/deps.stamp
if [ ! -f $dstamp ] || [ -n "$(find builder/boards builder/parts.py builder/pysysroot.py builder/debian.py -newer $dstamp -print -quit)" ]; then
  .venv/bin/bankboot deps
  mkdir -p build/cache && touch $dstamp
fi
