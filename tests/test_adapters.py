"""Adapters: config → PEFT mapping for every field, target-module checks before any work, LoRA+, AdaLoRA's penalty and
rank schedule, pretrained adapters (continue training, inference), merge (RUN/merged is what LLM.load uses and predicts
the same tokens as the unmerged adapter)."""
import json, warnings
import pandas as pd
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from llmnb.config import load_config
from llmnb.adapters import (adapter_regularization, attach_adapter, check_adapter, check_target_modules, default_target_modules,
                            linear_module_names, load_adapter, merge_adapter, peft_config)

ROWS = pd.DataFrame(dict(q=[f"{i} plus {i}?" for i in range(8)], a=[str(2 * i) for i in range(8)]))


def tiny():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, vocab_size=97, max_position_embeddings=128))


def cfg_dict(base="smollm2-135m-instruct", **over):
    trainer = {**dict(type="finetune", train_steps=2, batch_size=4, learning_rate=0.01, epochs=1), **over.pop("trainer", {})}
    return dict(base_model=str(base), input_features=[dict(name="q", type="text")], output_features=[dict(name="a", type="text")],
                prompt=dict(template="What is {q}"), trainer=trainer, preprocessing=dict(split=dict(type="random", probabilities=[1.0, 0.0, 0.0])),
                generation=dict(do_sample=False, max_new_tokens=4), **over)


def adapter(**kw): return load_config(cfg_dict(adapter=kw)).adapter


# ---- mapping of every field ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,expect", [
    (dict(type="lora"), dict(r=8, lora_alpha=16, lora_dropout=0.05, use_rslora=False, use_dora=False, bias="none")),
    (dict(type="lora", r=4, alpha=32, dropout=0.2, use_rslora=True, bias_type="all"), dict(r=4, lora_alpha=32, lora_dropout=0.2, use_rslora=True, bias="all")),
    (dict(type="lora", use_dora=True, bias_type="lora_only"), dict(use_dora=True, bias="lora_only")),
    (dict(type="lora", init_lora_weights="gaussian", rank_pattern={"q_proj": 2}, alpha_pattern={"q_proj": 4}),
     dict(init_lora_weights="gaussian", rank_pattern={"q_proj": 2}, alpha_pattern={"q_proj": 4})),
    (dict(type="adalora", target_r=2, init_r=6, tinit=1, tfinal=1, delta_t=2, beta1=0.7, beta2=0.6, orth_reg_weight=0.3, total_step=50),
     dict(target_r=2, init_r=6, tinit=1, tfinal=1, deltaT=2, beta1=0.7, beta2=0.6, orth_reg_weight=0.3, total_step=50)),
    (dict(type="ia3", target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"], fan_in_fan_out=False,
          modules_to_save=["lm_head"], init_ia3_weights=False),
     dict(feedforward_modules={"down_proj"}, modules_to_save=["lm_head"], init_ia3_weights=False, fan_in_fan_out=False)),
    (dict(type="prompt_tuning", num_virtual_tokens=5), dict(num_virtual_tokens=5)),
])
def test_every_field_reaches_peft(kw, expect):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pc = peft_config(adapter(**kw), tiny(), total_steps=10)
    for k, v in expect.items():
        got = getattr(pc, k)
        assert (set(got) if isinstance(v, set) else got) == v, (k, got, v)


def test_prompt_tuning_text_init(embedded_dir):
    pc = peft_config(adapter(type="prompt_tuning", num_virtual_tokens=3, prompt_tuning_init="text", prompt_tuning_init_text="Add them"),
                     tiny(), tokenizer_path=str(embedded_dir))
    assert (str(pc.prompt_tuning_init).split(".")[-1], pc.prompt_tuning_init_text, pc.tokenizer_name_or_path) == ("TEXT", "Add them", str(embedded_dir))


def test_adalora_total_step_from_run_and_user_targets():
    pc = peft_config(adapter(type="adalora", init_r=8, target_modules=["q_proj", "v_proj"]), tiny(), total_steps=37)
    assert pc.total_step == 37 and set(pc.target_modules) == {"q_proj", "v_proj"}


def test_adalora_equal_ranks_warns():
    with pytest.warns(UserWarning, match=r"target_r \(8\) >= adapter.init_r \(8\)"):
        peft_config(adapter(type="adalora", init_r=8), tiny(), total_steps=10)


# ---- target modules --------------------------------------------------------------------------------------------------
def test_default_targets_are_said(caplog):
    "Information goes to llmnb's logger (no UserWarning pointing at llmnb's own source)."
    import logging, warnings
    with caplog.at_level(logging.INFO, logger="llmnb.adapters"), warnings.catch_warnings():
        warnings.simplefilter("error")
        peft_config(adapter(type="lora"), tiny()); peft_config(adapter(type="ia3"), tiny())
    said = [r.getMessage() for r in caplog.records]
    assert "adapter.target_modules is null: lora targets ['k_proj', 'o_proj', 'q_proj', 'v_proj']" in said[0]
    assert "ia3 targets ['k_proj', 'v_proj', 'down_proj']" in said[1]


@pytest.mark.parametrize("targets,frag", [
    (["qproj"], "adapter.target_modules: ['qproj'] not found in this model; its linear modules are ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']"),
    (["q_proj", "query_key_value"], "['query_key_value'] not found"),
    (r".*attention\.dense", "the regex '.*attention\\\\.dense' matches no module"),
    (["lm_head"], "['lm_head'] not found"),  # the output head is never a target
])
def test_bad_targets(targets, frag):
    with pytest.raises(ValueError) as e: check_adapter(tiny(), adapter(type="lora", target_modules=targets))
    assert frag in str(e.value)


def test_regex_and_all_linear_attach():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = attach_adapter(tiny(), adapter(type="lora", target_modules=r".*\.mlp\.(up|down)_proj"))
        names = {n.split(".")[-4] for n, _ in m.named_parameters() if "lora_A" in n}
        assert names == {"up_proj", "down_proj"}
        m = attach_adapter(tiny(), adapter(type="lora", target_modules="all-linear"))
        assert {n.split(".")[-4] for n, _ in m.named_parameters() if "lora_A" in n} == set(linear_module_names(tiny()))


def test_bad_target_fails_before_tokenising(monkeypatch, tiny_model_dir, tmp_path):
    import llmnb.api as api
    def boom(*a, **k): raise AssertionError("tokenisation ran before the target-module check")
    monkeypatch.setattr(api, "tokenize_dataset", boom)
    monkeypatch.setattr(api.LLM, "_render", lambda *a, **k: (_ for _ in ()).throw(AssertionError("rendering ran before the check")))
    llm = api.LLM(cfg_dict(tiny_model_dir, adapter=dict(type="lora", target_modules=["q_proj", "c_attn"])))
    with pytest.raises(ValueError, match=r"adapter.target_modules: \['c_attn'\] not found in this model; its linear modules are \["):
        llm.train(ROWS, output_directory=tmp_path / "run", progress=False)


def test_missing_pretrained_folder(tmp_path):
    with pytest.raises(ValueError, match="has no adapter_config.json"):
        check_adapter(tiny(), adapter(type="lora", pretrained_adapter_weights=str(tmp_path)))
    with pytest.raises(ValueError, match="adapter.pretrained_adapter_weights: could not load an adapter from"):
        load_adapter(tiny(), str(tmp_path / "nothing"))


# ---- AdaLoRA --------------------------------------------------------------------------------------------------------
def test_adalora_penalty_matches_peft():
    m = attach_adapter(tiny(), adapter(type="adalora", init_r=4, target_r=2, orth_reg_weight=0.7, target_modules=["q_proj", "v_proj"]), total_steps=10)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n or "lora_A" in n: p.normal_()
    x = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        peft_loss = m(input_ids=x, labels=x).loss
        logits = m(input_ids=x).logits
        ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 97), x[:, 1:].reshape(-1))
    assert float(adapter_regularization(m)) > 0.1
    torch.testing.assert_close(peft_loss - ce, adapter_regularization(m), atol=1e-5, rtol=1e-5)


def _fit_adalora(tiny_model_dir, tmp_path, orth):
    from llmnb.api import LLM
    llm = LLM(cfg_dict(tiny_model_dir, adapter=dict(type="adalora", init_r=4, target_r=2, orth_reg_weight=orth, target_modules=["q_proj"]),
                       trainer=dict(train_steps=3, learning_rate=0.05)))
    llm.train(ROWS, output_directory=tmp_path / f"run{orth}", progress=False)
    return llm


def test_adalora_penalty_in_training_and_ranks_move(tiny_model_dir, tmp_path):
    a, b = _fit_adalora(tiny_model_dir, tmp_path, 0.0), _fit_adalora(tiny_model_dir, tmp_path, 0.5)
    wa = {n: p for n, p in a.model.named_parameters() if "lora_A" in n}
    wb = {n: p for n, p in b.model.named_parameters() if "lora_A" in n}
    assert any(not torch.allclose(wa[n], wb[n]) for n in wa), "orth_reg_weight had no effect on training"
    pc = b.model.peft_config["default"]
    assert pc.total_step == 3 and pc.rank_pattern  # update_and_allocate ran with gradients


# ---- LoRA+ ---------------------------------------------------------------------------------------------------------
def test_loraplus_optimizer_groups():
    from llmnb.train import make_optimizer as _optimizer
    cfg = load_config(cfg_dict(adapter=dict(type="lora", loraplus_lr_ratio=16), trainer=dict(learning_rate=0.001)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = attach_adapter(tiny(), cfg.adapter)
    opt = _optimizer(m, cfg.trainer, cfg.adapter.loraplus_lr_ratio)
    by_lr = {}
    for g in opt.param_groups:
        if g["params"]: by_lr[g["lr"]] = by_lr.get(g["lr"], 0) + len(g["params"])
    assert set(by_lr) == {0.001, 0.016}
    n_a = sum(1 for n, p in m.named_parameters() if "lora_A" in n)
    assert by_lr[0.001] == n_a and by_lr[0.016] == n_a
    plain = _optimizer(m, cfg.trainer)
    assert {g["lr"] for g in plain.param_groups} == {0.001}


# ---- real model: pretrained adapters, merge, full fine-tune ---------------------------------------------------------
@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    from llmnb.api import LLM
    d = tmp_path_factory.mktemp("lora") / "run"
    llm = LLM(cfg_dict(adapter=dict(type="lora", target_modules=["q_proj", "v_proj"], postprocessor=dict(merge_adapter_into_base_model=True, progressbar=True))))
    llm.train(ROWS, output_directory=d, progress=False)
    return d


@pytest.mark.slow
def test_merged_is_loaded_and_predicts_like_the_adapter(lora_run):
    from llmnb.api import LLM
    assert (lora_run / "merged" / "model.safetensors").exists() and (lora_run / "model" / "adapter_config.json").exists()
    merged = LLM.load(lora_run)
    assert merged.kind == "merged" and not hasattr(merged.model, "peft_config")
    unmerged = LLM.load(lora_run / "model")
    assert unmerged.kind == "adapter" and hasattr(unmerged.model, "peft_config")
    ask = pd.DataFrame(dict(q=[f"{i} plus {i}?" for i in range(3, 8)]))
    assert merged.predict(ask)["a_predictions"].tolist() == unmerged.predict(ask)["a_predictions"].tolist()
    assert json.loads((lora_run / "merged" / "llmnb.json").read_text())["kind"] == "merged"


@pytest.mark.slow
def test_pretrained_adapter_inference_and_continued_training(lora_run, tmp_path):
    from llmnb.api import LLM
    from safetensors.torch import load_file
    ask = pd.DataFrame(dict(q=["3 plus 3?", "5 plus 5?"]))
    ref = LLM.load(lora_run / "model").predict(ask)["a_predictions"].tolist()
    infer = LLM(cfg_dict(trainer=dict(type="none"), adapter=dict(type="lora", pretrained_adapter_weights=str(lora_run / "model"))))
    assert infer.predict(ask)["a_predictions"].tolist() == ref
    assert hasattr(infer.model, "peft_config")
    # continue training from it: the adapter starts from the saved weights
    cont = LLM(cfg_dict(adapter=dict(type="lora", pretrained_adapter_weights=str(lora_run / "model")), trainer=dict(train_steps=1)))
    cont.load_base()
    cont._prepare_for_finetune(1)
    saved = load_file(str(lora_run / "model" / "adapter_model.safetensors"))
    params = {n: p for n, p in cont.model.named_parameters() if "lora_B" in n}
    assert params and all(p.requires_grad for p in params.values())
    for k, v in saved.items():
        if "lora_B" in k:
            name = next(n for n in params if n.replace(".default", "") == k)
            torch.testing.assert_close(params[name].detach(), v)
    cont.train(ROWS, output_directory=tmp_path / "cont", progress=False)
    assert (tmp_path / "cont" / "model" / "adapter_config.json").exists()


@pytest.mark.slow
def test_no_adapter_is_full_finetune(tmp_path):
    from llmnb.api import LLM
    llm = LLM(cfg_dict(trainer=dict(train_steps=1)))
    llm.load_base()
    before = llm.model.model.layers[0].mlp.down_proj.weight.detach().clone()
    llm.train(ROWS, output_directory=tmp_path / "run", progress=False)
    assert llm.kind == "full" and not hasattr(llm.model, "peft_config")
    assert all(p.requires_grad for p in llm.model.parameters())
    assert not torch.equal(before, llm.model.model.layers[0].mlp.down_proj.weight.detach())


# ---- every PEFT method of the adapter table: train a step, save, reload with plain PEFT -----------------------------
NEW_METHODS = [dict(type="vera", r=16), dict(type="loha", r=4), dict(type="lokr", r=4), dict(type="fourierft", n_frequency=64),
               dict(type="boft", boft_block_size=4), dict(type="tinylora", r=2, u=8), dict(type="c3a", block_size=8),
               dict(type="oft", oft_block_size=8), dict(type="hra", r=4), dict(type="waveft", n_frequency=64),
               dict(type="ln_tuning"), dict(type="vblora", r=2, num_vectors=16, vector_length=8)]
NEW_METHODS += [dict(type="lora", r=4, init_lora_weights=i) for i in ("default", "gaussian", "orthogonal", "pissa", "olora")]


@pytest.mark.parametrize("kw", NEW_METHODS, ids=[k.get("init_lora_weights", k["type"]) for k in NEW_METHODS])
def test_method_trains_saves_and_reloads_with_plain_peft(kw, tiny_model_dir, tmp_path):
    from llmnb.api import LLM
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    if kw["type"] == "waveft": pytest.importorskip("pywt")
    llm = LLM(cfg_dict(tiny_model_dir, adapter=kw, trainer=dict(train_steps=1)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        llm.train(ROWS, output_directory=tmp_path / "run", progress=False)
    cfg = json.loads((tmp_path / "run" / "model" / "adapter_config.json").read_text())
    assert cfg["peft_type"].lower().replace("_", "") == kw["type"].replace("_", "")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    again = PeftModel.from_pretrained(base, str(tmp_path / "run" / "model")).eval()
    x = torch.tensor([[1, 5, 7, 9]])
    trained = llm.model.eval()
    with torch.no_grad(): torch.testing.assert_close(again(input_ids=x).logits, trained(input_ids=x.to(trained.device)).logits.float().cpu(), rtol=1e-3, atol=1e-3)


def test_init_lora_weights_default_is_peft_true():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert peft_config(adapter(type="lora", init_lora_weights="default"), tiny()).init_lora_weights is True


# ---- EVA and CorDA: LoRA initialised from the training rows (PEFT's initialize_lora_eva_weights / preprocess_corda) ----
def _initial_lora(init, base, tmp_path, **kw):
    "Train one step at a vanishing learning rate, so the LoRA weights are (to 1e-8) the initial ones; the LLM and its A."
    from llmnb.api import LLM
    llm = LLM(cfg_dict(base, adapter=dict(type="lora", r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=init, **kw),
                       trainer=dict(train_steps=1, learning_rate=1e-12)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        llm.train(ROWS, output_directory=tmp_path / str(init), progress=False)
    return llm, llm.model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight.detach().cpu().clone()


@pytest.mark.parametrize("init,kw", [("eva", dict(eva_config=dict(rho=2.0, tau=0.99))), ("corda", {})])
def test_data_init_differs_from_default_and_trains(init, kw, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    _, default_A = _initial_lora(True, tiny_model_dir, tmp_path)
    llm, A = _initial_lora(init, tiny_model_dir, tmp_path, **kw)
    assert A.shape[1] == default_A.shape[1] and (A.shape != default_A.shape or float((A - default_A).abs().max()) > 1e-3)
    assert llm.stats["steps_done"] == 1 and (tmp_path / init / "model" / "adapter_model.safetensors").exists()
    again = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(tmp_path / init / "model")).eval()
    x = torch.tensor([[1, 5, 7, 9]])
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=x).logits, llm.model.eval()(input_ids=x.to(llm.model.device)).logits.float().cpu(),
                                   rtol=1e-3, atol=1e-3)
