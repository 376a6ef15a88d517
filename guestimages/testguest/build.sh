#!/bin/sh
# build.sh OUTDIR - builds the rscvm test guest into OUTDIR/testguest.elf.
# Sources are in src/ next to this script. Needs only gcc and binutils (build-essential). Output is deterministic: no
# debug info, no build id, sources compiled by relative name.
set -eu

if [ $# -ne 1 ]; then
	echo "usage: $0 OUTDIR" >&2
	exit 2
fi

SRC=$(cd "$(dirname "$0")/src" && pwd)
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
CC=${CC:-gcc}

CFLAGS="-ffreestanding -nostdlib -static -fno-pic -no-pie -mno-red-zone \
-mno-sse -mno-mmx -mno-80387 -mgeneral-regs-only -O2 -std=gnu11 \
-m64 -march=x86-64 -mtune=generic \
-fno-stack-protector -fno-asynchronous-unwind-tables -fno-unwind-tables \
-fno-tree-loop-distribute-patterns -fno-jump-tables -fcf-protection=none \
-fno-common -fno-strict-aliasing -ffile-prefix-map=$SRC=. \
-Wall -Wextra -Werror"

OBJS="entry.o main.o uart.o printf.o pci.o cmdline.o power.o trap.o mem.o paging.o \
heap.o virtio_pci.o ring.o virtio_net.o smp.o trampoline.o"

TMP=$(mktemp -d "$OUT/.testguest-build.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

cd "$SRC"
for o in $OBJS; do
	base=${o%.o}
	if [ -f "$base.S" ]; then
		src="$base.S"
	else
		src="$base.c"
	fi
	# shellcheck disable=SC2086
	$CC $CFLAGS -c "$src" -o "$TMP/$o"
done

cd "$TMP"
# shellcheck disable=SC2086
$CC $CFLAGS -Wl,--build-id=none -Wl,-n -Wl,-T,"$SRC/linker.ld" -o testguest.elf.tmp $OBJS
mv testguest.elf.tmp "$OUT/testguest.elf"
