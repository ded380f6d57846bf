import os, shutil, pytest
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False, help="also run the real-model tests")

def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"): return
    skip = pytest.mark.skip(reason="real-model test: run with --slow")
    for item in items:
        if "slow" in item.keywords: item.add_marker(skip)

@pytest.fixture(scope="session")
def embedded_dir():
    "The embedded SmolLM2-135M-Instruct as a safetensors folder (converted once from the GGUF package)."
    from llmnb.model import resolve_base_model
    return Path(resolve_base_model("smollm2-135m-instruct"))

@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_dir):
    "A tiny random-weight Llama with the real SmolLM2 tokenizer, saved as a local model folder."
    from transformers import AutoTokenizer
    from llmnb.testing import tiny_llama_dir
    return tiny_llama_dir(tmp_path_factory.mktemp("tiny-llama"), AutoTokenizer.from_pretrained(embedded_dir))
