#!/usr/bin/env bash
# Build every guest image rscvm's tests use (what `make guest` runs).
#
# Usage: guestimages/build.sh [OUTDIR [STEP...]]
#   OUTDIR defaults to out/ at the repository root.
#   STEPs (default: all of them, in this order):
#     linux      linux-source kernel     -> OUTDIR/linux/{bzImage,vmlinux,cmdline.txt,config,kver}
#     debian     pinned Debian kernel    -> OUTDIR/debian/{vmlinuz,kver,config,modules/}
#     agent      static Go /init agent   -> OUTDIR/agent
#     initramfs  reproducible newc cpio  -> OUTDIR/initramfs.cpio (agent + Debian modules)
#
# Idempotent: the kernel build and the Debian download are cached in
# $RSCVM_CACHE (default /var/cache/rscvm), keyed by SHA-256 of their inputs;
# a rerun takes seconds. Needs: linux-source-6.1 build-essential flex bison bc
# libelf-dev libssl-dev lz4 xz-utils kmod (and Go).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
outdir=${1:-$repo/out}
shift || true
steps=("$@")
[[ ${#steps[@]} -gt 0 ]] || steps=(linux debian agent initramfs)
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)

log() { printf 'guest: %s\n' "$*" >&2; }
go=${GO:-go}
command -v "$go" >/dev/null || go=/usr/local/go/bin/go

t_all=$SECONDS
for step in "${steps[@]}"; do
	t0=$SECONDS
	case $step in
	linux)
		log "[linux] linux-source kernel"
		"$here/kernel/build-linux.sh" "$outdir"
		;;
	debian)
		log "[debian] pinned Debian cloud kernel"
		"$here/kernel/fetch-debian.sh" "$outdir"
		;;
	agent)
		log "[agent] building static agent"
		(cd "$repo" && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 GOAMD64=v1 \
			"$go" build -trimpath -buildvcs=false -ldflags='-s -w' -o "$outdir/agent" ./guestimages/agent)
		;;
	initramfs)
		log "[initramfs] writing $outdir/initramfs.cpio"
		mods=()
		[[ -f $outdir/debian/modules/load.order ]] && mods=(-modules "$outdir/debian/modules")
		if [[ ! -f $outdir/agent ]]; then
			log "ERROR: $outdir/agent missing; run the agent step first"
			exit 1
		fi
		(cd "$repo" && "$go" run ./guestimages/initramfs/cmd/mkinitramfs -agent "$outdir/agent" "${mods[@]}" -o "$outdir/initramfs.cpio")
		;;
	*)
		log "ERROR: unknown step $step (linux, debian, agent, initramfs)"
		exit 2
		;;
	esac
	log "[$step] done in $((SECONDS - t0)) s"
done
log "all done in $((SECONDS - t_all)) s: $outdir"
