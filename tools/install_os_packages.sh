#!/usr/bin/env bash
# The OS packages the tests, the cluster topology and the operator's view need, installed when missing (Debian/Ubuntu apt).
# `make demo` needs none of them; `make test` and `.ci/run` call this first.
#   redis-server            the shared entity state of serving replicas (tests start their own servers)
#   prometheus              promtool (alert rule checks and unit tests) and the Prometheus server the
#                           operator's-view integration test scrapes riskops with (the package's daemon
#                           is not used: tests start their own)
#   prometheus-pushgateway  where the monitor job pushes its verdict metrics
#   chromium chromium-driver  the headless browser test of Evidently's UI (Selenium drives chromedriver)
set -euo pipefail

needed=()
command -v redis-server >/dev/null || needed+=(redis-server)
command -v promtool >/dev/null && command -v prometheus >/dev/null || needed+=(prometheus)
command -v prometheus-pushgateway >/dev/null || needed+=(prometheus-pushgateway)
command -v chromium >/dev/null || needed+=(chromium)
command -v chromedriver >/dev/null || needed+=(chromium-driver)

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
# Debian's packages may start system services (6379, 9090, 9091); the tests use their own ports and servers
for cmd in redis-server promtool prometheus prometheus-pushgateway chromium chromedriver; do
  command -v "$cmd" >/dev/null || { echo "OS package install did not provide $cmd" >&2; exit 1; }
done
