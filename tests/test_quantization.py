"""Quantization: every field reaches bitsandbytes, the §1.6 rules, 4/8-bit in-context learning with and without an
adapter, 8-bit merge, and a quiet import on CPU."""
import os, subprocess, sys
import pandas as pd
import pytest
import torch

from llmnb.config import ConfigError, load_config
from llmnb.quantization import bnb_config

ROWS = pd.DataFrame(dict(q=[f"{i} plus {i}?" for i in range(8)], a=[str(2 * i) for i in range(8)]))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def cfg_dict(**over):
    trainer = {**dict(type="finetune", train_steps=2, batch_size=4, learning_rate=0.01, epochs=1), **over.pop("trainer", {})}
    return dict(base_model="smollm2-135m-instruct", input_features=[dict(name="q", type="text")], output_features=[dict(name="a", type="text")],
                prompt=dict(template="What is {q}"), trainer=trainer, preprocessing=dict(split=dict(type="random", probabilities=[1.0, 0.0, 0.0])),
                generation=dict(do_sample=False, max_new_tokens=4), **over)


@pytest.mark.parametrize("q,expect", [
    (dict(bits=4), dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.float16)),
    (dict(bits=4, bnb_4bit_quant_type="fp4", bnb_4bit_use_double_quant=False, bnb_4bit_compute_dtype="float32"),
     dict(bnb_4bit_quant_type="fp4", bnb_4bit_use_double_quant=False, bnb_4bit_compute_dtype=torch.float32)),
    (dict(bits=8), dict(load_in_8bit=True, load_in_4bit=False, llm_int8_threshold=6.0, llm_int8_has_fp16_weight=False)),
    (dict(bits=8, llm_int8_threshold=3.5, llm_int8_has_fp16_weight=True), dict(llm_int8_threshold=3.5, llm_int8_has_fp16_weight=True)),
])
def test_fields_reach_bitsandbytes(q, expect):
    b = bnb_config(load_config(cfg_dict(adapter=dict(type="lora"), quantization=q)).quantization)
    for k, v in expect.items(): assert getattr(b, k) == v, (k, getattr(b, k), v)


@pytest.mark.parametrize("over,frag", [
    (dict(quantization=dict(bits=4)), "fine-tuning a quantized model needs adapter.type: lora (got adapter null)"),  # A8
    (dict(quantization=dict(bits=4), adapter=dict(type="ia3")), "needs adapter.type: lora (got adapter 'ia3')"),
    (dict(quantization=dict(bits=4), adapter=dict(type="lora", postprocessor=dict(merge_adapter_into_base_model=True))),
     "merging an adapter into a 4-bit quantized model is unsupported (got quantization.bits 4); allowed: quantization.bits: 8, or no quantization"),  # A9
])
def test_rules(over, frag):
    with pytest.raises(ConfigError) as e: load_config(cfg_dict(**over))
    assert frag in str(e.value)


def test_rules_accept():
    load_config(cfg_dict(quantization=dict(bits=4), adapter=dict(type="lora")))
    load_config(cfg_dict(quantization=dict(bits=8), adapter=dict(type="lora", postprocessor=dict(merge_adapter_into_base_model=True))))
    load_config(cfg_dict(quantization=dict(bits=4), trainer=dict(type="none")))  # in-context learning: no adapter needed


def test_import_is_quiet():
    p = subprocess.run([sys.executable, "-c", "import llmnb.adapters, peft, bitsandbytes"], capture_output=True, text=True, env=ENV)
    assert p.returncode == 0, p.stderr
    assert "kernels-community" not in p.stderr and "gemm_4bit" not in p.stderr, p.stderr


@pytest.mark.slow
@pytest.mark.parametrize("bits,layer", [(4, "Linear4bit"), (8, "Linear8bitLt")])
def test_in_context_quantized(bits, layer):
    from llmnb.api import LLM
    q = dict(bits=bits, bnb_4bit_compute_dtype="float32") if bits == 4 else dict(bits=bits)
    llm = LLM(cfg_dict(trainer=dict(type="none"), quantization=q))
    out = llm.predict(ROWS.iloc[:3])
    assert len(out) == 3 and out["a_predictions"].map(lambda s: isinstance(s, str)).all()
    assert type(llm.model.model.layers[0].self_attn.q_proj).__name__ == layer
    assert llm.model.get_memory_footprint() < 0.8 * 4 * sum(p.numel() for p in llm.model.parameters()) or bits == 4


@pytest.mark.slow
def test_qlora8_merge_and_quantized_adapter_inference(tmp_path):
    from llmnb.api import LLM
    run = tmp_path / "run"
    llm = LLM(cfg_dict(quantization=dict(bits=8), adapter=dict(type="lora", target_modules=["q_proj", "v_proj"],
                                                               postprocessor=dict(merge_adapter_into_base_model=True))))
    llm.train(ROWS, output_directory=run, progress=False)
    assert type(llm.model.base_model.model.model.layers[0].self_attn.q_proj.base_layer).__name__ == "Linear8bitLt"
    assert (run / "merged" / "model.safetensors").exists()
    merged = LLM.load(run)
    assert merged.kind == "merged" and type(merged.model.model.layers[0].self_attn.q_proj).__name__ == "Linear8bitLt"
    assert len(merged.predict(ROWS.iloc[:2])) == 2
    # a quantized base predicting with the trained adapter (trainer none + pretrained_adapter_weights)
    infer = LLM(cfg_dict(trainer=dict(type="none"), quantization=dict(bits=4, bnb_4bit_compute_dtype="float32"),
                         adapter=dict(type="lora", pretrained_adapter_weights=str(run / "model"))))
    out = infer.predict(ROWS.iloc[:2])
    assert len(out) == 2 and hasattr(infer.model, "peft_config")
    assert type(infer.model.base_model.model.model.layers[0].self_attn.q_proj.base_layer).__name__ == "Linear4bit"
