#!/usr/bin/env bash
# Install mdw-kit, then run the whole MDW pipeline on the built-in openmoji data with 50% caption noise.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" -m pip install --quiet --disable-pip-version-check -e ".[notebooks]"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$PY" -m mdw_kit.cli pipeline --out "${1:-runs/demo}"
