#!/usr/bin/env bash
# Installs dependencies, builds wye and starts the gateway. Extra arguments go to 'wye serve'.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DWYE_TESTS=OFF >/dev/null
cmake --build build/release
exec build/release/wye serve "$@"
