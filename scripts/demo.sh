#!/usr/bin/env bash
# The main job: a real LoRA fine-tune of the embedded SmolLM2-135M on a bundled dataset, offline, with held-out
# predictions before and after (llmnb/demo.py). A few minutes on 2 CPU cores. Flags go on to `llmnb demo`
# (`bash scripts/demo.sh --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/llmnb ] || echo "First run: installing llmnb and its dependencies into .venv/ (CPU torch and the embedded model; a few minutes) ..."
bash scripts/setup.sh
. .venv/bin/activate && HF_HUB_OFFLINE=1 llmnb demo "$@"
