#!/usr/bin/env bash
# Installs the Debian packages pysup needs; with --test also those only the test suite needs.
# Idempotent: apt-get runs only when something is missing, so repeated `make` calls cost nothing.
# Every system package the project uses is listed here.
set -euo pipefail

packages=(
  python3-venv     # the virtual environment for the Python dependencies (ensurepip)
  python3-dev      # headers for Python packages that compile on install
  libseccomp2      # libseccomp.so.2, loaded by pyseccomp to build and load the seccomp filter
  busybox-static   # a static busybox: scripts/make-busybox-rootfs.sh builds the test and demo rootfs from it
  tini             # /usr/bin/tini-static: the small PID 1 of `init: true`, bound read-only at /dev/init
  zstd             # unpacks zstd-compressed image layers and rootfs tarballs (supervisor/images/store.py)
  nftables         # nft: the NAT and isolation rules of stack networks, in pysup's own table ip pysup-<project>
)
if [[ ${1:-} == --test ]]; then
  packages+=(
    docker-registry  # tests/images: a real OCI registry on loopback, started and stopped by the fixtures
    skopeo           # tests/images: pushes the OCI layouts the tests build to that registry
    apache2-utils    # tests/images: htpasswd, for the registry's basic-auth test
  )
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "pysup: needs root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "pysup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
