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
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, AutoTokenizer
    d = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(embedded_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      vocab_size=len(tok), max_position_embeddings=512, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(d, safe_serialization=True)
    tok.save_pretrained(d)
    return d
