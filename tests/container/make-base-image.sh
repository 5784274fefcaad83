#!/bin/sh
# Makes the local base images that deploy/Dockerfile starts FROM, without a registry, the way
# Debian's official images are made (debuerreotype): debootstrap --variant=minbase bookworm,
# apt's caches and logs removed, imported into podman (or docker) as debian:bookworm; then the
# same with what debuerreotype-slimify removes (documentation, man pages, locales; dpkg told
# to keep them out of later installs too) as debian:bookworm-slim. Sizes measured on the slim
# one are close to the real debian:bookworm-slim (~75 MB).
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
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/apt/* "$rootfs"/var/log/*.log \
    "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old

import_as() {
    tar -C "$rootfs" --numeric-owner -c . |
        "$engine" import --change 'CMD ["bash"]' - "$1" >/dev/null
    echo "make-base-image: $1: $(du -sh "$rootfs" | cut -f1)" >&2
}
import_as "debian:$suite"

# debuerreotype-slimify: these paths leave the image, and dpkg keeps them out of later installs.
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
EOF
find "$rootfs/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$rootfs"/usr/share/groff/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/linda/* \
    "$rootfs"/usr/share/lintian/* "$rootfs"/usr/share/man/*
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
import_as "debian:$suite-slim"
