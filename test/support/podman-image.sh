#!/usr/bin/env bash
# Builds the repository's Dockerfile with podman on a machine without a Docker engine or registry access (CI):
#
#   podman-image.sh DIR CONTEXT TAG
#
# DIR      a folder of the caller's own: podman's configuration and storage live there, nothing system-wide
#          (remove it with `podman system reset --force` under the printed environment, then rm -rf)
# CONTEXT  the build context (a clean clone of the repository)
# TAG      the name given to the built image
#
# The base image `node:20-bookworm-slim` is a STAND-IN made by standin-node-image.sh (Debian bookworm minbase +
# this machine's Node 20 + user `node` uid 1000), cached as a tarball in $ANSFLOW_IMAGE_CACHE
# (default /var/cache/ansflow-realtime-test) and imported under the official name.
# On success the last line printed is the environment to use podman on DIR's storage:
#   CONTAINERS_CONF=DIR/containers.conf CONTAINERS_STORAGE_CONF=DIR/storage.conf
set -euo pipefail

dir=$(realpath "${1:?usage: podman-image.sh DIR CONTEXT TAG}")
context=${2:?usage: podman-image.sh DIR CONTEXT TAG}
tag=${3:?usage: podman-image.sh DIR CONTEXT TAG}
here=$(dirname "$(realpath "$0")")
cache=${ANSFLOW_IMAGE_CACHE:-/var/cache/ansflow-realtime-test}

mkdir -p "$dir/storage" "$dir/run" "$dir/tmp" "$dir/networks" "$cache"

# This machine caps processes at 20000 open files and 32768 processes: podman's default container rlimits are
# above that and fail ("error setting rlimit"). No systemd here, hence cgroupfs and a file events log. crun
# refuses the host's hybrid cgroup layout; runc accepts it. Everything podman keeps lives under DIR, so two runs never
# share state and `podman system reset` touches nothing else.
cat >"$dir/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$dir/events.log"
tmp_dir = "$dir/tmp"

[network]
network_config_dir = "$dir/networks"
CONF
cat >"$dir/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$dir/storage"
runroot = "$dir/run"
CONF
export CONTAINERS_CONF=$dir/containers.conf CONTAINERS_STORAGE_CONF=$dir/storage.conf

base_tar=$cache/node$(node -p process.versions.node)-bookworm-minbase.tar
"$here/standin-node-image.sh" "$base_tar"
podman import --quiet \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["node"]' \
  "$base_tar" node:20-bookworm-slim >/dev/null

# HTTPS from inside the build (npm ci) may go through a proxy whose CA is in this machine's bundle but not in
# Node's: npm's global config in the stand-in (/usr/local/etc/npmrc) points at the host bundle, both mounted
# read-only for the build only, so neither ends up in a layer.
ca_bundle=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
printf 'cafile=/run/host-ca/ca-certificates.crt\n' >"$dir/npmrc"

# --format docker: the OCI image format has no HEALTHCHECK, podman would drop it. --network host: the default
# bridge network would add firewall rules and turn on IP forwarding on the host.
podman build --format docker --network host \
  --volume "$dir/npmrc:/usr/local/etc/npmrc:ro" \
  --volume "$ca_bundle:/run/host-ca/ca-certificates.crt:ro" \
  --tag "$tag" "$context"

echo "CONTAINERS_CONF=$CONTAINERS_CONF CONTAINERS_STORAGE_CONF=$CONTAINERS_STORAGE_CONF"
