"""Ludwig's named multi-adapters (`adapters: {adapters: {...}, active, merge}`): one adapter trains per run, each is saved
under its name (PEFT's layout), a later run loads them and merges them with PEFT's `add_weighted_adapter`; the merged
weights are what each method says (checked against the formulas here, not against PEFT), and the merged run predicts."""
import math
import pandas as pd
import pytest, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
from llmnb.api import LLM
from llmnb.config import ConfigError, load_config

DATA = pd.DataFrame(dict(q=[f"question {i}" for i in range(8)], a=[f"answer {i}" for i in range(8)]))

def _cfg(base, adapters, trainer="finetune"):
    t = dict(type="finetune", train_steps=2, batch_size=2, learning_rate=0.05) if trainer == "finetune" else dict(type="none")
    return dict(base_model=str(base), input_features=[dict(name="q", type="text")], output_features=[dict(name="a", type="text")],
                adapters=adapters, trainer=t, generation=dict(max_new_tokens=3))

def _train_one(base, tmp_path, name, seed):
    cfg = _cfg(base, {"adapters": {name: {"type": "lora", "r": 2, "target_modules": ["q_proj", "v_proj"]}}})
    cfg["trainer"]["seed"] = seed
    LLM(cfg).train(DATA, output_directory=tmp_path/name, progress=False)
    return tmp_path/name

@pytest.fixture(scope="module")
def two_runs(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("named")
    return {n: _train_one(tiny_model_dir, tmp, n, s) for n, s in (("dates", 1), ("names", 2))}

def _factors(model, name, layer=0):
    "(A, B, scaling) of one named adapter's q_proj."
    q = model.base_model.model.model.layers[layer].self_attn.q_proj
    return q.lora_A[name].weight.detach(), q.lora_B[name].weight.detach(), q.scaling[name]

def test_each_run_saves_its_adapter_under_its_name(two_runs, tiny_model_dir):
    d = two_runs["dates"]/"model"/"dates"
    assert (d/"adapter_config.json").exists() and not (two_runs["dates"]/"model"/"adapter_config.json").exists()
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(d), adapter_name="dates")
    A, B, _ = _factors(plain, "dates")
    assert B.abs().sum() > 0   # trained: LoRA's B starts at zero
    assert LLM.load(two_runs["dates"]).predict(DATA.head(2))["a_predictions"].notna().all()

def _merged(tiny_model_dir, two_runs, merge):
    ad = {"adapters": {n: {"type": "lora", "r": 2, "pretrained_adapter_weights": str(two_runs[n])} for n in two_runs},
          "merge": merge, "active": "merged"}
    return LLM(_cfg(tiny_model_dir, ad, trainer="none")).load_base()

def _weights(llm, w):
    "Per-source weights of the A and B factors, as the merge splits w·scaling between them."
    ws = [w[i] * _factors(llm.model, n)[2] for i, n in enumerate(("dates", "names"))]
    return [math.copysign(math.sqrt(abs(x)), x) for x in ws], [math.sqrt(abs(x)) for x in ws]

def _ties(ts, ws, density):
    "TIES (Yadav et al. 2023): keep each task's top-density magnitudes, elect a sign per entry, average the agreeing ones."
    kept = []
    for t in ts:
        k = int(density * t.numel()); m = torch.zeros(t.numel()); m[t.abs().flatten().topk(k).indices] = 1
        kept.append(t * m.view_as(t))
    kept = torch.stack(kept); sign = torch.where(kept.sum(0) >= 0, 1.0, -1.0); agree = kept.sign() == sign
    weighted = kept * torch.tensor(ws).view(-1, 1, 1)
    return (weighted * agree).sum(0) / agree.sum(0).clamp(min=1)

def test_ties_merge_is_ties_of_the_factors(tiny_model_dir, two_runs):
    llm = _merged(tiny_model_dir, two_runs, {"combination_type": "ties", "weights": [0.6, 0.4], "density": 0.5})
    (wa, wb), (A, B, _) = _weights(llm, [0.6, 0.4]), _factors(llm.model, "merged")
    srcs = [_factors(llm.model, n) for n in ("dates", "names")]
    torch.testing.assert_close(A, _ties([s[0] for s in srcs], wa, 0.5))
    torch.testing.assert_close(B, _ties([s[1] for s in srcs], wb, 0.5))
    assert llm.model.active_adapter == "merged"
    pred = llm.predict(DATA.head(3))
    assert len(pred) == 3 and pred["a_predictions"].notna().all()

def test_linear_and_dare_merges(tiny_model_dir, two_runs):
    llm = _merged(tiny_model_dir, two_runs, {"combination_type": "linear", "weights": [0.5, 1.5]})
    (wa, _), (A, _, _) = _weights(llm, [0.5, 1.5]), _factors(llm.model, "merged")
    srcs = [_factors(llm.model, n)[0] for n in ("dates", "names")]
    torch.testing.assert_close(A, wa[0] * srcs[0] + wa[1] * srcs[1])   # linear: the weighted sum of the factors
    torch.manual_seed(0)
    llm = _merged(tiny_model_dir, two_runs, {"combination_type": "dare_linear", "density": 0.25})
    (wa, _), (A, _, _) = _weights(llm, [1.0, 1.0]), _factors(llm.model, "merged")
    a0, a1 = (wa[i] * srcs[i] / 0.25 for i in range(2))   # DARE: drop at random, rescale what is kept by 1/density
    options = torch.stack([torch.zeros_like(a0), a0, a1, a0 + a1])
    assert torch.isclose(options, A.expand_as(options), atol=1e-6).any(0).all()
    assert 0.3 < (A == 0).float().mean() < 0.8   # about (1 - 0.25)² of the entries are dropped from both

def test_merge_after_training_holds_the_trained_adapter(tiny_model_dir, two_runs, tmp_path):
    ad = {"adapters": {"fresh": {"type": "lora", "r": 2, "target_modules": ["q_proj", "v_proj"]},
                       "names": {"type": "lora", "r": 2, "pretrained_adapter_weights": str(two_runs["names"])}},
          "merge": {"combination_type": "svd", "name": "both"}}
    llm = LLM(_cfg(tiny_model_dir, ad))
    llm.train(DATA, output_directory=tmp_path/"r", progress=False)
    assert sorted(p.name for p in (tmp_path/"r"/"model").iterdir() if p.is_dir() and p.name != "retrieval") == ["both", "fresh", "names"]
    q = llm.model.base_model.model.model.layers[0].self_attn.q_proj
    target = q.get_delta_weight("fresh") + q.get_delta_weight("names")   # svd: the best rank-2 approximation of the sum
    err = torch.linalg.matrix_norm(q.get_delta_weight("both") - target)
    torch.testing.assert_close(err, torch.linalg.svdvals(target)[2:].square().sum().sqrt(), atol=1e-4, rtol=1e-3)
    assert q.get_delta_weight("fresh").abs().sum() > 0   # the trained adapter is in the merge
    back = LLM.load(tmp_path/"r")
    assert back.model.active_adapter == "fresh" and set(back.model.peft_config) == {"both", "fresh", "names"}
    assert len(back.predict(DATA.head(2))) == 2

def test_config_errors():
    base = dict(base_model="smollm2-135m", input_features=[dict(name="q", type="text")], output_features=[dict(name="a", type="text")])
    for over, msg in [(dict(adapters={"adapters": {"a": {}}}), "adapters.adapters.a: trainer.type 'none' trains nothing"),
                      (dict(adapters={"adapters": {"a": {}}}, adapter={"type": "lora"}, trainer={"type": "finetune"}), "set one of them"),
                      (dict(adapters={"adapters": {"a": {}, "b": {"r": 4}}, "merge": {"combination_type": "ties"}}, trainer={"type": "finetune"}),
                       "ties needs sources of one rank"),
                      (dict(adapters={"adapters": {"a": {}}, "merge": {"sources": ["a", "z"]}}, trainer={"type": "finetune"}),
                       "adapters.merge.sources: not an adapter name (got 'z')")]:
        with pytest.raises(ConfigError) as e: load_config({**base, **over})
        assert msg in str(e.value), str(e.value)
