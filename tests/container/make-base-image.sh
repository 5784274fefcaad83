#!/bin/sh
# Makes the local base images that deploy/Dockerfile starts FROM, without a registry:
# debootstrap --variant=minbase bookworm, imported into podman (or docker) and tagged
#   debian:bookworm and debian:bookworm-slim
# (the same root file system under both names; it is already about as small as -slim).
#
# Usage: tests/container/make-base-image.sh [--force] [ENGINE]
#   ENGINE  podman (default) or docker
#   --force rebuild even when both tags exist
# Needs root, debootstrap and Debian's archive (the only network this needs).
set -eu

force=0
if [ "${1:-}" = "--force" ]; then
    force=1
    shift
fi
engine=${1:-podman}
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

have_image() {
    if [ "$engine" = podman ]; then
        podman image exists "$1"
    else
        docker image inspect "$1" >/dev/null 2>&1
    fi
}

if [ "$force" -eq 0 ] && have_image "debian:$suite" && have_image "debian:$suite-slim"; then
    echo "make-base-image: debian:$suite and debian:$suite-slim exist; nothing to do" >&2
    exit 0
fi

command -v debootstrap >/dev/null 2>&1 || {
    echo "make-base-image: debootstrap is missing (apt-get install -y debootstrap)" >&2
    exit 1
}

work=$(mktemp -d "${TMPDIR:-/tmp}/irsafs-rootfs.XXXXXX")
cleanup() {
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

rootfs="$work/rootfs"
echo "make-base-image: debootstrap --variant=minbase $suite (about a minute)" >&2
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    echo "make-base-image: debootstrap failed" >&2
    exit 1
}

# What the official image carries: updates and security suites, no recommends, a clean cache.
cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security_mirror $suite-security main
EOF
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    >"$rootfs/etc/apt/apt.conf.d/00irsafs-no-recommends"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

tar -C "$rootfs" --numeric-owner -c . |
    "$engine" import --change 'CMD ["bash"]' - "debian:$suite" >/dev/null
"$engine" tag "debian:$suite" "debian:$suite-slim"
echo "make-base-image: tagged debian:$suite and debian:$suite-slim" >&2
