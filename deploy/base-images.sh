#!/bin/sh
# Makes the Debian base images that `make images` builds on where no registry can be reached:
# a minimal Debian (debootstrap) brought into Docker with `docker import`, and the same with
# Python 3, numpy and scipy (apt-get in a chroot) for the evaluator. Only Debian's package mirror is needed. The
# root file systems are cached as tarballs in $CACHE, so a second run only imports them.
# Needs root (debootstrap, chroot). Usage: base-images.sh BASE_TAG PYTHON_TAG
set -eu
BASE_TAG=$1
PYTHON_TAG=$2
CACHE=${CACHE:-deploy/.cache}
SUITE=${SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$CACHE"

# debootstrap is the one tool this needs beyond Docker; a fresh Debian host has none.
if ! command -v debootstrap >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "== apt-get install debootstrap"
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
	else
		echo "base-images.sh: debootstrap is missing; install it (apt-get install debootstrap) and run again as root" >&2
		exit 1
	fi
fi

rootfs() { # tarball: debootstrap a minimal Debian into a fresh dir, with extra packages
	tar=$1
	shift
	[ -s "$tar" ] && return 0
	dir=$(mktemp -d "$CACHE/rootfs.XXXXXX")
	trap 'rm -rf "$dir"' EXIT
	echo "== debootstrap $SUITE ($*) into $dir"
	debootstrap --variant=minbase --include="$(echo "$@" | tr ' ' ,)" "$SUITE" "$dir" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
		{ tail -20 "$CACHE/debootstrap.log"; exit 1; }
	rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
	tar -C "$dir" --numeric-owner -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
	rm -rf "$dir"
	trap - EXIT
}

image() { # tag tarball
	if docker image inspect "$1" >/dev/null 2>&1; then
		return 0
	fi
	echo "== docker import $2 as $1"
	docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change 'CMD ["bash"]' "$2" "$1" >/dev/null
}

python() { # tarball: the base with Python 3, numpy and scipy installed by apt in a chroot
	tar=$1
	[ -s "$tar" ] && return 0
	dir=$(mktemp -d "$CACHE/rootfs.XXXXXX")
	trap 'rm -rf "$dir"' EXIT
	echo "== apt-get install python3-numpy python3-scipy in a copy of the base"
	tar -C "$dir" -xf "$CACHE/debian-$SUITE.tar"
	# The chroot resolves the mirror as this host does; its own files come back afterwards.
	cp /etc/resolv.conf /etc/hosts "$dir/etc/"
	chroot "$dir" sh -c 'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
		--no-install-recommends python3 python3-numpy python3-scipy' >"$CACHE/apt.log" 2>&1 ||
		{ tail -20 "$CACHE/apt.log"; exit 1; }
	tar -C "$dir" -xf "$CACHE/debian-$SUITE.tar" ./etc/resolv.conf ./etc/hosts 2>/dev/null || true
	rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
	tar -C "$dir" --numeric-owner -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
	rm -rf "$dir"
	trap - EXIT
}

rootfs "$CACHE/debian-$SUITE.tar" ca-certificates
image "$BASE_TAG" "$CACHE/debian-$SUITE.tar"
python "$CACHE/debian-$SUITE-python.tar"
image "$PYTHON_TAG" "$CACHE/debian-$SUITE-python.tar"
