"""Each adapter type, full fine-tuning and QLoRA (4/8-bit) on the real embedded model: train a few steps, save, reload in a
fresh process and predict (A28, A29); the reloaded model differs from the base; the saved folder loads with plain
transformers/PEFT, without llmnb."""
import json, os, subprocess, sys, textwrap
import pandas as pd
import pytest

ROWS = pd.DataFrame(dict(q=[f"{i} plus {i}?" for i in range(8)], a=[str(2 * i) for i in range(8)]))
ASK = ROWS.iloc[:2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}

VARIANTS = {
    "lora": dict(adapter=dict(type="lora")),
    "lora_r4_qkv": dict(adapter=dict(type="lora", r=4, dropout=0.1, target_modules=["q_proj", "k_proj", "v_proj"])),
    "rslora": dict(adapter=dict(type="lora", use_rslora=True)),
    "dora": dict(adapter=dict(type="lora", use_dora=True, target_modules=["q_proj", "v_proj"])),
    "loraplus": dict(adapter=dict(type="lora", loraplus_lr_ratio=16, target_modules="all-linear")),
    "adalora": dict(adapter=dict(type="adalora", init_r=8, beta1=0.8, target_modules=["q_proj", "v_proj"])),
    "ia3": dict(adapter=dict(type="ia3")),
    "ia3_noinit": dict(adapter=dict(type="ia3", init_ia3_weights=False)),
    "prompt_tuning": dict(adapter=dict(type="prompt_tuning", num_virtual_tokens=4, prompt_tuning_init="text", prompt_tuning_init_text="Add the numbers")),
    "full": dict(trainer=dict(train_steps=1)),
    "qlora4": dict(adapter=dict(type="lora"), quantization=dict(bits=4, bnb_4bit_compute_dtype="float32")),
    "qlora8": dict(adapter=dict(type="lora"), quantization=dict(bits=8)),
    "neftune": dict(adapter=dict(type="lora"), model_parameters=dict(neftune_noise_alpha=0.5)),
}


def config(**over):
    trainer = {**dict(type="finetune", train_steps=2, batch_size=4, learning_rate=0.01, epochs=1), **over.pop("trainer", {})}
    return dict(base_model="smollm2-135m-instruct", input_features=[dict(name="q", type="text")], output_features=[dict(name="a", type="text")],
                prompt=dict(template="What is {q}"), trainer=trainer, preprocessing=dict(split=dict(type="random", probabilities=[1.0, 0.0, 0.0])),
                generation=dict(do_sample=False, max_new_tokens=4), **over)


def run_py(code, *args, timeout=300):
    "Run `code` in a fresh python; return the JSON it prints last."
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


RELOAD = """
    import sys, json, torch, pandas as pd
    from llmnb.api import LLM
    run, base_logits = sys.argv[1], torch.load(sys.argv[2])
    llm = LLM.load(run)
    preds = llm.predict(pd.DataFrame(dict(q=["0 plus 0?", "1 plus 1?"])))["a_predictions"].tolist()
    ids = llm.tokenizer(["What is 3 plus 3?"], return_tensors="pt")
    with torch.no_grad(): diff = (llm.model(**ids).logits[:, -1].float() - base_logits).abs().max().item()
    print(json.dumps(dict(preds=preds, diff=diff, kind=llm.kind, cls=type(llm.model).__name__)))
"""

PLAIN = """
    import sys, os, json, torch
    sys.modules["llmnb"] = None  # prove llmnb is not needed
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder, base_dir = sys.argv[1], sys.argv[2]
    tok = AutoTokenizer.from_pretrained(folder)
    if os.path.exists(os.path.join(folder, "adapter_config.json")):
        import peft
        model = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), folder)
    else: model = AutoModelForCausalLM.from_pretrained(folder)
    out = model.generate(**tok(["What is 2 plus 2?"], return_tensors="pt"), max_new_tokens=3, do_sample=False)
    print(json.dumps(dict(n=int(out.shape[1]), cls=type(model).__name__)))
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_trains_saves_reloads(name, tmp_path, embedded_dir):
    import torch
    from llmnb.api import LLM
    llm = LLM(config(**VARIANTS[name])).load_base()
    with torch.no_grad(): torch.save(llm.model(**llm.tokenizer(["What is 3 plus 3?"], return_tensors="pt")).logits[:, -1].float(), tmp_path / "base.pt")
    stats = llm.train(ROWS, output_directory=tmp_path / "run", progress=False)
    assert stats["steps_done"] == VARIANTS[name].get("trainer", {}).get("train_steps", 2)
    assert all(v == v for v in stats["train"]["loss"])  # no NaN
    here = llm.predict(ASK)["a_predictions"].tolist()
    model_dir = tmp_path / "run" / "model"
    files = {p.name for p in model_dir.iterdir()}
    if name == "full": assert {"config.json", "model.safetensors"} <= files and "adapter_config.json" not in files
    else: assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= files and "model.safetensors" not in files
    got = run_py(RELOAD, tmp_path / "run", tmp_path / "base.pt")
    assert got["kind"] == ("full" if name == "full" else "adapter")
    assert len(got["preds"]) == 2
    assert got["preds"] == here, (got["preds"], here)  # the fresh process predicts what the trained model did
    assert got["diff"] > 1e-4, got  # reloaded weights are not the base model's
    plain = run_py(PLAIN, model_dir, embedded_dir)
    assert plain["n"] > 3


@pytest.mark.slow
def test_adalora_reallocates_ranks(tmp_path):
    "update_and_allocate runs with the gradients each step: AdaLoRA's budget schedule produces a rank pattern."
    from llmnb.api import LLM
    llm = LLM(config(adapter=dict(type="adalora", init_r=4, target_r=2, tinit=0, tfinal=0, delta_t=1, target_modules=["q_proj"]),
                     trainer=dict(train_steps=3)))
    llm.train(ROWS, output_directory=tmp_path / "run", progress=False)
    pc = llm.model.peft_config["default"]
    assert pc.total_step == 3  # computed from the run
    assert pc.rank_pattern, "no rank allocation happened"
    kept = sum(int(v.sum()) if hasattr(v, "sum") else sum(v) for v in pc.rank_pattern.values())
    assert kept < 4 * len(pc.rank_pattern)  # some ranks were pruned
