#!/usr/bin/env bash
# The peers the benchmarks compare pysup with, all from Debian's packages. Not needed by the tests.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# bubblewrap, crun and runc: the container-start peers of bench/run_latency.py
apt-get install -y -qq --no-install-recommends docker-compose podman podman-compose bubblewrap crun runc >/dev/null
# skopeo and umoci: the pull-and-unpack peers of bench/image_pull.py (podman above too)
apt-get install -y -qq --no-install-recommends skopeo umoci docker-registry >/dev/null
