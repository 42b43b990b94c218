#!/usr/bin/env bash
# Makes a STAND-IN for the official `node:20-bookworm-slim` image as a root file system tarball, for machines
# with no registry access (CI here): Debian bookworm (debootstrap, variant minbase) + this machine's Node 20
# placed under /usr/local as the official image does + a `node` user with uid/gid 1000. It is not the official
# image: it only has what the Dockerfile relies on (apt-get, Node/npm under /usr/local, the `node` user).
#
#   standin-node-image.sh OUT.tar     builds OUT.tar unless it already exists (the caller caches it)
#
# The Debian mirror is the one this machine's own apt sources use, so no host name lives in the repository.
# Needs root, debootstrap, and a Node 20 on PATH.
set -euo pipefail

out=${1:?usage: standin-node-image.sh OUT.tar}
[ -s "$out" ] && exit 0

node_bin=$(readlink -f "$(command -v node)")
node_major=$("$node_bin" -p 'process.versions.node.split(".")[0]')
[ "$node_major" = 20 ] || { echo "standin: Node 20 needed on PATH, found $("$node_bin" -v)" >&2; exit 1; }
node_prefix=$(dirname "$(dirname "$node_bin")")
global_modules=$(npm root -g)

# The first bookworm (not -security, not -updates) mirror of the machine's apt sources, deb822 or one-line style.
mirror_candidates() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -e "$f" ] || continue
    awk 'BEGIN{RS=""} /(^|\n)Suites:[^\n]*[ \t]bookworm([ \t]|\n|$)/ { if (match($0, /URIs:[ \t]*[^ \t\n]+/)) { s=substr($0, RSTART, RLENGTH); sub(/URIs:[ \t]*/, "", s); print s } }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -e "$f" ] || continue
    awk '$1=="deb" && $3=="bookworm" { print $2 }' "$f"
  done
}
mirror=$(mirror_candidates | head -n1)
[ -n "$mirror" ] || { echo "standin: no bookworm mirror found in /etc/apt/sources*" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/standin-node.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/rootfs

debootstrap --variant=minbase bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

# Node where the official image has it: /usr/local/bin/node and npm/corepack under /usr/local/lib/node_modules.
mkdir -p "$root/usr/local/bin" "$root/usr/local/lib/node_modules" "$root/usr/local/include"
cp "$node_bin" "$root/usr/local/bin/node"
cp -a "$global_modules/npm" "$global_modules/corepack" "$root/usr/local/lib/node_modules/"
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
ln -s ../lib/node_modules/corepack/dist/corepack.js "$root/usr/local/bin/corepack"
[ -d "$node_prefix/include/node" ] && cp -a "$node_prefix/include/node" "$root/usr/local/include/"

chroot "$root" groupadd --gid 1000 node
chroot "$root" useradd --uid 1000 --gid node --shell /bin/bash --create-home node
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb

tar --numeric-owner -C "$root" -cf "$work/rootfs.tar" .
mv "$work/rootfs.tar" "$out"
