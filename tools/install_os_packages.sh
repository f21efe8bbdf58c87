#!/usr/bin/env bash
# The OS packages the tests and the cluster topology need, installed when missing (Debian/Ubuntu apt).
# `make demo` needs none of them; `make test` and `.ci/run` call this first.
#   redis-server  the shared entity state of serving replicas (tests start their own servers)
set -euo pipefail

needed=()
command -v redis-server >/dev/null || needed+=(redis-server)

if [ ${#needed[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "install these OS packages, then re-run: ${needed[*]} (no apt-get on this machine)" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo "installing OS packages: ${needed[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q --no-install-recommends "${needed[@]}" >/dev/null 2>&1 \
  || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q --no-install-recommends "${needed[@]}" >/dev/null; }
# Debian's package may start a system service on 6379; the tests use their own ports and servers
command -v redis-server >/dev/null
