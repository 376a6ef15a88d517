#!/usr/bin/env bash
# Installs the Debian packages rscvm's build, guest images and tests need.
# Idempotent; needs root (CI runs as root).
set -euo pipefail
pkgs=(
  build-essential gcc binutils make git       # the freestanding test guest, cgo-free Go builds
  linux-source flex bison bc libelf-dev libssl-dev lz4 xz-utils cpio kmod  # the linux-source guest kernel
  qemu-system-x86                             # QEMU 7.2: the side-by-side reference
  iproute2 ethtool tcpdump iperf3 iputils-ping  # TAP, namespaces, offload checks, traffic, ping
  acpica-tools                                # iasl: disassembles the ACPI tables in tests
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "deps.sh: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "deps.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "deps.sh: all packages present"
