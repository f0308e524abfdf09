#!/usr/bin/env bash
# Install everything the test suite needs, then run it (unit tests, notebooks in smoke mode, browser test).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" -m pip install --quiet --disable-pip-version-check -e ".[notebooks,test]"
if ! command -v chromium >/dev/null 2>&1; then
    echo "installing Debian chromium + chromium-driver for the browser test"
    if [ "$(id -u)" = "0" ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MDW_SMOKE=1 MDW_NO_PROGRESS=1
exec "$PY" -m pytest tests notebooks mdw_kit --doctest-modules --nbval-lax -p no:cacheprovider "$@"
