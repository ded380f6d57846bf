#!/usr/bin/env bash
# Run llmnb's tests: the notebooks (nbdev-test) and tests/ (pytest).
#   bash scripts/test.sh          fast set: tiny random models, a few minutes
#   bash scripts/test.sh --slow   also the real-model set (the embedded SmolLM2), as CI does
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --gguf
. .venv/bin/activate
# warnings stay visible (no PYTHONWARNINGS=ignore): a deprecation must be seen to be fixed
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
slow=""; [ "${1:-}" = "--slow" ] && slow=1
python scripts/nbtest.py ${slow:+--flags slow}
pytest -q -p no:cacheprovider ${slow:+--slow} tests
