#!/usr/bin/env bash
# Build rscvm's guest kernel from Debian's linux-source-6.1 package:
# tinyconfig + rscvm.config, patched with rscvm.patch, bzImage and vmlinux.
#
# Usage: build-linux.sh OUTDIR
#   writes OUTDIR/linux/{bzImage,vmlinux,cmdline.txt,config,kver,cpufeatures.h}
#
# The build is cached outside the clone in $RSCVM_CACHE (default
# /var/cache/rscvm) as linux-<sha256 of the inputs>/: the linux-source package
# version, the compiler version, rscvm.config, rscvm.patch and this script.
# A cached run only verifies and copies (seconds).
#
# Environment: RSCVM_CACHE (cache root), RSCVM_JOBS (make -j, default 2),
# RSCVM_KEEP_BUILD=1 keeps the unpacked build tree for debugging.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { printf 'build-linux: %s\n' "$*" >&2; }
die() { printf 'build-linux: ERROR: %s\n' "$*" >&2; exit 1; }

[[ $# -eq 1 ]] || die "usage: $0 OUTDIR"
outdir=$1
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)

srcpkg=linux-source-6.1
tarball=/usr/src/linux-source-6.1.tar.xz
jobs=${RSCVM_JOBS:-2}

need() {
	command -v "$1" >/dev/null 2>&1 || die "missing $1; apt-get install -y $2"
}
need make build-essential
need gcc build-essential
need flex flex
need bison bison
need bc bc
need lz4 lz4
need xz xz-utils
[[ -f /usr/include/libelf.h ]] || die "missing libelf headers; apt-get install -y libelf-dev"
[[ -f /usr/include/openssl/ssl.h ]] || die "missing OpenSSL headers; apt-get install -y libssl-dev"
srcver=$(dpkg-query -W -f '${Version}' "$srcpkg" 2>/dev/null) ||
	die "$srcpkg is not installed; apt-get install -y linux-source-6.1"
[[ -f $tarball ]] || die "$tarball missing; apt-get install --reinstall -y $srcpkg"

# cache root: /var/cache/rscvm, or the user's cache directory if not writable
cache=${RSCVM_CACHE:-/var/cache/rscvm}
if ! mkdir -p "$cache" 2>/dev/null || [[ ! -w $cache ]]; then
	cache=${XDG_CACHE_HOME:-$HOME/.cache}/rscvm
	mkdir -p "$cache"
fi

key=$({
	echo "srcpkg $srcpkg $srcver"
	echo "cc $(gcc --version | head -n1)"
	echo "config"; cat "$here/rscvm.config"
	echo "patch"; cat "$here/rscvm.patch"
	echo "script"; cat "$here/build-linux.sh"
} | sha256sum | cut -d' ' -f1)
dir=$cache/linux-$key

# check_config CONFIG: every line of the fragment must be honoured.
check_config() {
	local cfg=$1 bad=0 line sym
	while IFS= read -r line; do
		if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
			grep -qxF -- "$line" "$cfg" || {
				log "config: wanted '$line', got '$(grep -E "^(# )?${BASH_REMATCH[1]}[= ]" "$cfg" || echo "${BASH_REMATCH[1]} absent")'"
				bad=1
			}
		elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
			sym=${BASH_REMATCH[1]}
			if grep -qE "^${sym}=" "$cfg"; then
				log "config: wanted '$line', got '$(grep -E "^${sym}=" "$cfg")'"
				bad=1
			fi
		fi
	done <"$here/rscvm.config"
	[[ $bad -eq 0 ]] || die "the final .config does not honour $here/rscvm.config (see above)"
}

build() {
	local work=$cache/build-$key
	local t0=$SECONDS
	rm -rf "$work"
	mkdir -p "$work"
	log "unpacking $tarball ($srcpkg $srcver) into $work"
	tar -xf "$tarball" -C "$work" --strip-components=1
	log "applying rscvm.patch"
	patch -s -p1 -d "$work" <"$here/rscvm.patch"
	log "configuring: tinyconfig + rscvm.config + olddefconfig"
	make -s -C "$work" ARCH=x86_64 tinyconfig >/dev/null
	(cd "$work" && KCONFIG_CONFIG=.config scripts/kconfig/merge_config.sh -m -O . .config "$here/rscvm.config" >/dev/null)
	make -s -C "$work" ARCH=x86_64 olddefconfig >/dev/null
	check_config "$work/.config"
	log "building bzImage and vmlinux with make -j$jobs (takes minutes)"
	if ! make -C "$work" ARCH=x86_64 -j"$jobs" KBUILD_BUILD_USER=rscvm KBUILD_BUILD_HOST=rscvm \
		KBUILD_BUILD_TIMESTAMP="$(date -u -r "$tarball")" bzImage vmlinux >"$work/build.log" 2>&1; then
		tail -n 40 "$work/build.log" >&2
		die "kernel build failed; full log in $work/build.log"
	fi
	local tmp=$dir.tmp.$$
	rm -rf "$tmp"
	mkdir -p "$tmp"
	cp "$work/arch/x86/boot/bzImage" "$work/vmlinux" "$work/.config" "$work/build.log" "$tmp/"
	mv "$tmp/.config" "$tmp/config"
	cp "$work/arch/x86/include/asm/cpufeatures.h" "$tmp/"
	make -s -C "$work" ARCH=x86_64 kernelrelease >"$tmp/kver"
	echo "$((SECONDS - t0))" >"$tmp/build-seconds"
	rm -rf "$dir"
	mv "$tmp" "$dir"
	if [[ ${RSCVM_KEEP_BUILD:-0} != 1 ]]; then
		rm -rf "$work"
	fi
	log "built in $((SECONDS - t0)) s; cached in $dir"
}

# cpuid_numbers CPUFEATURES_H: the X86_FEATURE numbers of clearcpuid.features,
# comma separated, in file order.
cpuid_numbers() {
	local h=$1 name def nums=()
	while IFS= read -r name; do
		[[ -z $name || $name == \#* ]] && continue
		def=$(grep -E "^#define[[:space:]]+X86_FEATURE_${name}[[:space:]]" "$h") ||
			die "X86_FEATURE_$name not found in $h"
		[[ $def =~ \([[:space:]]*([0-9]+)[[:space:]]*\*[[:space:]]*32[[:space:]]*\+[[:space:]]*([0-9]+)[[:space:]]*\) ]] ||
			die "cannot parse: $def"
		nums+=($((BASH_REMATCH[1] * 32 + BASH_REMATCH[2])))
	done <"$here/clearcpuid.features"
	local IFS=,
	echo "${nums[*]}"
}

(
	flock 9
	if [[ -f $dir/bzImage && -f $dir/vmlinux && -f $dir/kver ]]; then
		log "cache hit: $dir"
	else
		log "cache miss: $dir"
		build
	fi
	check_config "$dir/config"

	want=$(cpuid_numbers "$dir/cpufeatures.h")
	cmdline=$(head -n1 "$here/cmdline.txt")
	[[ " $cmdline " == *" clearcpuid=$want "* ]] ||
		die "cmdline.txt clearcpuid= does not match cpufeatures.h of $srcpkg $srcver: want clearcpuid=$want"
	arg=clearcpuid=$want
	((${#want} <= 128)) || die "clearcpuid argument is ${#want} characters; 6.1 accepts 128"

	mkdir -p "$outdir/linux"
	for f in bzImage vmlinux config kver cpufeatures.h; do
		cmp -s "$dir/$f" "$outdir/linux/$f" 2>/dev/null || cp "$dir/$f" "$outdir/linux/$f"
	done
	cmp -s "$here/cmdline.txt" "$outdir/linux/cmdline.txt" 2>/dev/null || cp "$here/cmdline.txt" "$outdir/linux/cmdline.txt"
	log "ok: $outdir/linux/{bzImage,vmlinux,cmdline.txt} (kernel $(cat "$dir/kver"), $arg)"
) 9>"$cache/linux.lock"
