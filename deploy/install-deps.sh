#!/usr/bin/env bash
# Installs wye's build and test dependencies from Debian 12 packages (skips when present).
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config
      libwebsockets-dev libcurl4-openssl-dev liblua5.4-dev libmbedtls-dev libcmocka-dev libcjson-dev
      python3 python3-jinja2 curl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "wye: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
