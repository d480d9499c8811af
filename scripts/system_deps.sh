#!/usr/bin/env bash
# Install the Debian packages edgeloop needs (mosquitto, mosquitto-clients, tmux, nodejs, npm)
# if missing.
# Only installs; never starts or stops the system's own broker.
set -euo pipefail
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
# the tests prove the secure profile's ACL with the real mosquitto_pub / mosquitto_sub
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
# the Sparkplug test decodes payloads with Eclipse Tahu's JavaScript library (tests/tools/sparkplug)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${need[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
# Debian starts the packaged broker on 1883; edgeloop runs its own on a free port instead.
