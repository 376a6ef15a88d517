#!/usr/bin/env bash
# Fetch the pinned Debian cloud kernel (debian-cloud.pin) and extract what the
# rscvm guest tests need.
#
# Usage: fetch-debian.sh OUTDIR
#   writes OUTDIR/debian/{vmlinuz,kver,config} and OUTDIR/debian/modules/
#   (the virtio/failover/net modules named in the pin and their dependencies,
#   plus load.order: one file name per line, in load order, and kver)
#        fetch-debian.sh --update-pin
#   rewrites debian-cloud.pin for what linux-image-cloud-amd64 depends on now
#
# The extracted result is cached in $RSCVM_CACHE (default /var/cache/rscvm) as
# debian-<sha256 of the pin and this script>/.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pinfile=$here/debian-cloud.pin
log() { printf 'fetch-debian: %s\n' "$*" >&2; }
die() { printf 'fetch-debian: ERROR: %s\n' "$*" >&2; exit 1; }

pin() { # pin KEY
	local v
	v=$(sed -n "s/^$1=//p" "$pinfile" | head -n1)
	[[ -n $v ]] || die "$pinfile has no $1="
	printf '%s' "$v"
}

update_pin() {
	local meta pkg ver sum
	meta=$(pin meta)
	pkg=$(apt-cache depends "$meta" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -n1)
	[[ -n $pkg ]] || die "apt-cache depends $meta names no linux-image package (run apt-get update?)"
	ver=$(apt-cache show "$pkg" | sed -n 's/^Version: //p' | head -n1)
	sum=$(apt-cache show "$pkg=$ver" | sed -n 's/^SHA256: //p' | head -n1)
	[[ -n $ver && -n $sum ]] || die "apt-cache show $pkg gives no version/SHA256"
	sed -i -e "s/^package=.*/package=$pkg/" -e "s/^version=.*/version=$ver/" -e "s/^sha256=.*/sha256=$sum/" "$pinfile"
	log "pinned $pkg=$ver ($sum) in $pinfile"
}

if [[ ${1:-} == --update-pin ]]; then
	update_pin
	exit 0
fi
[[ $# -eq 1 ]] || die "usage: $0 OUTDIR | --update-pin"
outdir=$1
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)

command -v apt-get >/dev/null || die "apt-get not found (Debian/Ubuntu needed)"
command -v depmod >/dev/null && command -v modprobe >/dev/null || die "missing depmod/modprobe; apt-get install -y kmod"

pkg=$(pin package)
ver=$(pin version)
sum=$(pin sha256)
read -r -a mods <<<"$(pin modules)"

cache=${RSCVM_CACHE:-/var/cache/rscvm}
if ! mkdir -p "$cache" 2>/dev/null || [[ ! -w $cache ]]; then
	cache=${XDG_CACHE_HOME:-$HOME/.cache}/rscvm
	mkdir -p "$cache"
fi
key=$(cat "$pinfile" "$here/fetch-debian.sh" | sha256sum | cut -d' ' -f1)
dir=$cache/debian-$key

fetch() {
	local work=$cache/debian-work.$$
	rm -rf "$work"
	mkdir -p "$work"
	chmod 755 "$work" # lets apt's _apt user write there
	log "downloading $pkg=$ver"
	if ! (cd "$work" && apt-get download -q "$pkg=$ver" >"$work/apt.log" 2>&1); then
		cat "$work/apt.log" >&2
		local cur
		cur=$(apt-cache depends "$(pin meta)" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -n1)
		rm -rf "$work"
		die "apt has no $pkg=$ver any more (linux-image-cloud-amd64 now depends on ${cur:-?}).
Update the pin: apt-get update && $here/fetch-debian.sh --update-pin, then commit $pinfile."
	fi
	local deb
	deb=$(ls "$work"/*.deb)
	echo "$sum  $deb" | sha256sum -c --quiet - >/dev/null 2>&1 ||
		die "$deb: SHA-256 $(sha256sum "$deb" | cut -d' ' -f1) is not the pinned $sum"
	log "extracting $(basename "$deb")"
	dpkg-deb -x "$deb" "$work/root"
	local kver
	kver=$(ls "$work/root/lib/modules")
	[[ -n $kver && -f $work/root/boot/vmlinuz-$kver ]] || die "unexpected package layout: no boot/vmlinuz-$kver"
	depmod -b "$work/root" "$kver"
	local tmp=$dir.tmp.$$ f base
	rm -rf "$tmp"
	mkdir -p "$tmp/modules"
	cp "$work/root/boot/vmlinuz-$kver" "$tmp/vmlinuz"
	cp "$work/root/boot/config-$kver" "$tmp/config"
	echo "$kver" >"$tmp/kver"
	echo "$kver" >"$tmp/modules/kver"
	: >"$tmp/modules/load.order"
	# --show-depends prints "insmod PATH" in load order; built-in ones as "builtin NAME"
	while read -r what f _; do
		[[ $what == insmod ]] || continue
		base=$(basename "$f")
		grep -qxF "$base" "$tmp/modules/load.order" && continue
		cp "$f" "$tmp/modules/$base"
		echo "$base" >>"$tmp/modules/load.order"
	done < <(modprobe -d "$work/root" -S "$kver" -a --show-depends "${mods[@]}")
	[[ -s $tmp/modules/load.order ]] || log "note: ${mods[*]} are all built into $kver"
	rm -rf "$dir"
	mv "$tmp" "$dir"
	rm -rf "$work"
}

(
	flock 9
	if [[ -f $dir/vmlinuz && -f $dir/kver ]]; then
		log "cache hit: $dir"
	else
		log "cache miss: $dir"
		fetch
	fi
	mkdir -p "$outdir/debian"
	for f in vmlinuz kver config; do
		cmp -s "$dir/$f" "$outdir/debian/$f" 2>/dev/null || cp "$dir/$f" "$outdir/debian/$f"
	done
	rm -rf "$outdir/debian/modules"
	cp -r "$dir/modules" "$outdir/debian/modules"
	log "ok: $outdir/debian/{vmlinuz,kver,modules/} ($pkg=$ver, kernel $(cat "$dir/kver"), modules: $(tr '\n' ' ' <"$dir/modules/load.order"))"
) 9>"$cache/debian.lock"
