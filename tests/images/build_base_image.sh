#!/usr/bin/env bash
# Builds the Debian 12 systemd image that every Molecule scenario boots, with
# debootstrap and `docker import`: these machines reach no image registry.
# The tag carries a hash of this script, so a changed package list rebuilds it
# and an unchanged one is reused from the local docker cache.
set -euo pipefail

name="${BASE_IMAGE_NAME:-onprem-triton/debian12-systemd}"
tag="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)"
image="${name}:${tag}"

packages=(
  systemd systemd-sysv dbus python3 python3-apt sudo ca-certificates gnupg
  iproute2 procps kmod curl
)

if docker image inspect "${image}" >/dev/null 2>&1; then
  echo "base image ${image} cached"
else
  # The mirror this machine is configured with; Debian's archive otherwise.
  mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
  rootfs="$(mktemp -d /var/tmp/onprem-triton-rootfs.XXXXXX)"
  trap 'rm -rf "${rootfs}"' EXIT
  echo "building ${image} from ${mirror}"
  debootstrap --variant=minbase --include="$(IFS=,; echo "${packages[*]}")" \
    bookworm "${rootfs}" "${mirror}" >/dev/null
  # Units that make no sense in a container and slow its boot.
  for unit in systemd-udevd getty@tty1 systemd-logind systemd-timesyncd apt-daily.timer apt-daily-upgrade.timer; do
    chroot "${rootfs}" systemctl mask "${unit}" >/dev/null 2>&1 || true
  done
  # Clean the apt lists, keep the sources pointing at the same mirror.
  rm -rf "${rootfs}"/var/lib/apt/lists/* "${rootfs}"/var/cache/apt/*.bin
  echo "deb ${mirror} bookworm main non-free non-free-firmware contrib" > "${rootfs}/etc/apt/sources.list"
  : > "${rootfs}/etc/machine-id"
  tar -C "${rootfs}" -c . | docker import \
    --change 'CMD ["/lib/systemd/systemd"]' \
    --change 'ENV container=docker' \
    - "${image}" >/dev/null
fi
docker tag "${image}" "${name}:latest"
echo "${image}"
