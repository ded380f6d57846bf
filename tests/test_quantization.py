"""Quantization: every field reaches bitsandbytes, the §1.6 rules, 4/8-bit in-context learning with and without an
adapter, 8-bit merge, and a quiet import on CPU."""
import os, subprocess, sys
import pandas as pd
import pytest
import torch

from llmnb.config import ConfigError, load_config
from llmnb.model import bnb_config

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
    assert "Failed to load" not in p.stderr and "Enum subclass" not in p.stderr, p.stderr   # torchao's CPU notices


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


# torchao (Ludwig 0.17's `quantization: {backend: torchao, mode: ...}`), on the tiny model: weights quantized at load,
# predictions run, a LoRA adapter trains on top and its run reloads quantized.
def tiny_cfg(base, **over):
    return {**cfg_dict(**over), "base_model": str(base)}


@pytest.mark.parametrize("mode,tensor", [("int8_weight_only", "Int8Tensor"), ("float8", "Float8Tensor")])
def test_torchao_lora_trains_and_predicts(tiny_model_dir, tmp_path, mode, tensor):
    from llmnb.api import LLM
    c = tiny_cfg(tiny_model_dir, quantization=dict(backend="torchao", mode=mode), adapter=dict(type="lora", r=4))
    llm = LLM(c, device="cpu")
    llm.train(ROWS, output_directory=tmp_path / "run", progress=False)
    layer = llm.model.base_model.model.model.layers[0].self_attn.q_proj
    assert type(layer).__name__ == "TorchaoLoraLinear" and type(layer.base_layer.weight).__name__ == tensor
    assert any(float(p.detach().abs().sum()) > 0 for n, p in llm.model.named_parameters() if "lora_B" in n)  # B starts at 0: trained
    again = LLM.load(tmp_path / "run", device="cpu")
    assert type(again.model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight).__name__ == tensor
    out = again.predict(ROWS.iloc[:2])
    assert len(out) == 2 and out["a_predictions"].map(lambda s: isinstance(s, str)).all()


def test_torchao_int8_weights_are_int8(tiny_model_dir):
    from llmnb.model import load_model
    m, _ = load_model(load_config(tiny_cfg(tiny_model_dir, trainer=dict(type="none"),
                                           quantization=dict(backend="torchao", mode="int8_weight_only"))), device="cpu")
    w = m.model.layers[0].self_attn.q_proj.weight
    assert type(w).__name__ == "Int8Tensor" and w.qdata.dtype == torch.int8


@pytest.mark.parametrize("q,trainer,frag", [
    (dict(mode="int4_weight_only"), "none", "quantization.mode: int4_weight_only needs a CUDA GPU (got device 'cpu')"),
    (dict(mode="int8_weight_only", qat=True), "none", "quantization.qat: quantization-aware training is not built"),
    (dict(mode="int8_dynamic"), "finetune", "quantization.mode: int8_dynamic layers pass no gradient"),
])
def test_torchao_refusals(tiny_model_dir, tmp_path, q, trainer, frag):
    from llmnb.api import LLM
    from llmnb.errors import LlmnbError
    c = tiny_cfg(tiny_model_dir, quantization=dict(backend="torchao", **q), trainer=dict(type=trainer), adapter=dict(type="lora"))
    if trainer == "none": c.pop("adapter")
    with pytest.raises(LlmnbError) as e:
        llm = LLM(c, device="cpu")
        llm.train(ROWS, output_directory=tmp_path / "run", progress=False) if trainer == "finetune" else llm.predict(ROWS.iloc[:1])
    assert frag in str(e.value)


def test_torchao_int8_dynamic_predicts(tiny_model_dir):
    from llmnb.api import LLM
    llm = LLM(tiny_cfg(tiny_model_dir, trainer=dict(type="none"), quantization=dict(backend="torchao", mode="int8_dynamic")), device="cpu")
    assert len(llm.predict(ROWS.iloc[:2])) == 2


@pytest.mark.parametrize("q,frag", [
    (dict(backend="torchao"), "quantization.mode: required with backend torchao (got null); allowed: 'int4_weight_only'"),
    (dict(backend="torchao", mode="int2"), "quantization.mode: invalid value (got 'int2')"),
    (dict(mode="int8_weight_only"), "quantization.mode: only used with backend torchao"),
])
def test_torchao_config_errors(q, frag):
    with pytest.raises(ConfigError) as e: load_config(cfg_dict(adapter=dict(type="lora"), quantization=q))
    assert frag in str(e.value)


def test_torchao_bnb_field_warns():
    from llmnb.errors import LlmnbWarning
    with pytest.warns(LlmnbWarning, match="quantization.bits: a bitsandbytes field, ignored with backend torchao"):
        load_config(cfg_dict(adapter=dict(type="lora"), quantization=dict(backend="torchao", mode="float8", bits=8)))
