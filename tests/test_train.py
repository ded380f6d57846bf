"""The training engine on the tiny random Llama: the loss through the model's forward equals the previous hidden-state
path; 4-bit QLoRA keeps learning after an evaluation; every trainer key is honoured (a behavioural check each) or
declared in COMPAT; seed 0; checkpoints, exact resume and the fingerprint check."""
import json, math, warnings
from pathlib import Path
import pytest
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
import llmnb.train as T
from llmnb.config import COMPAT, FinetuneTrainer, config_json_schema, load_config
from llmnb.errors import LlmnbError
from llmnb.testing import tiny_llama, tiny_llama_dir

ROWS = [dict(input_ids=[1, 3 + (i * 7) % 90, 4 + (i * 5) % 90, 5, 60 + i % 20, 61, 2], n_prompt=4) for i in range(16)]
TOK = type("Tok", (), dict(pad_token_id=0))()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return tiny_llama_dir(tmp_path_factory.mktemp("tiny"), vocab_size=97)


def cfg_for(base, adapter=None, **trainer):
    t = {**dict(type="finetune", batch_size=2, train_steps=4, learning_rate=1e-2, steps_per_checkpoint=2, early_stop=-1,
                seed=0, learning_rate_scheduler=dict(warmup_fraction=0.0)), **trainer}
    return load_config(dict(base_model=str(base), input_features=[dict(name="q", type="text")],
                            output_features=[dict(name="a", type="text")], trainer=t, adapter=adapter))


def run(base, tmp, rows=ROWS, val=ROWS[:4], model=None, resume=False, **trainer):
    model = model if model is not None else tiny_llama(vocab_size=97)
    stats = T.fit(model, TOK, rows, val, cfg_for(base, **trainer), tmp, resume=resume, progress=False, plot=False)
    return model, stats, Path(tmp)


def weights(model):
    return torch.cat([v.flatten().double() for v in T.trainable_state(model).values()])


# ------------------------------------------------------------------ the loss through the model's forward
def previous_loss_sum(model, batch, chunk=1024):
    "The loss before this change: the backbone's hidden states, then the output layer on answer positions."
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    y = labels[:, 1:]; sel = y != -100
    base = T.base_model_of(model)
    h = base.base_model(**inputs, use_cache=False).last_hidden_state[:, :-1]
    hs, ys, head = h[sel], y[sel], base.get_output_embeddings()
    ce = lambda hc, yc: F.cross_entropy(head(hc).float(), yc, reduction="sum")
    total = h.new_zeros((), dtype=torch.float32)
    for i in range(0, hs.shape[0], chunk): total = total + checkpoint(ce, hs[i:i + chunk], ys[i:i + chunk], use_reentrant=False)
    return total, int(sel.sum())


def test_forward_loss_equals_previous_path_on_packed_batches():
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(tiny_llama(vocab_size=97, tie_word_embeddings=False), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    g = torch.Generator().manual_seed(0)
    rows = [dict(input_ids=torch.randint(3, 97, (k,), generator=g).tolist(), n_prompt=k // 3) for k in (9, 17, 5, 12, 30, 7)]
    for batch in (T.pack_batch(rows), T.pack_batch(rows[:2]), T.pack_batch(rows[2:])):
        got = []
        for fn in (T.loss_sum, previous_loss_sum):
            model.zero_grad(); s, n = fn(model, batch); s.backward()
            got.append((s.item(), n, torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])))
        assert got[0][1] == got[1][1]
        assert abs(got[0][0] - got[1][0]) <= 1e-5 * max(1, abs(got[1][0]))
        assert (got[0][2] - got[1][2]).abs().max().item() < 1e-5


# ------------------------------------------------------------------ QLoRA after an evaluation
def qlora_model(tiny_dir):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32)
    model = prepare_model_for_kbit_training(AutoModelForCausalLM.from_pretrained(tiny_dir, quantization_config=q), use_gradient_checkpointing=False)
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=64, target_modules="all-linear", lora_dropout=0.0))
    with torch.no_grad(): model.eval(); model(input_ids=torch.tensor([[1, 2, 3]]))   # an evaluation before training
    return model


def test_qlora_keeps_learning_after_evaluation(tiny_dir, tmp_path):
    "Evaluations change nothing in 4-bit training: the same weights as a run without any, and the loss keeps falling."
    kw = dict(rows=ROWS[:4] * 2, val=ROWS[:4], train_steps=6, batch_size=8, learning_rate=3e-2, use_mixed_precision=False)
    model = qlora_model(tiny_dir)
    mods = [m for m in model.modules() if hasattr(m, "support_avx512bf16_for_cpu")]
    fast = [m.support_avx512bf16_for_cpu for m in mods]
    _, stats, _ = run(tiny_dir, tmp_path/"a", model=model, steps_per_checkpoint=1, **kw)
    quiet, _, _ = run(tiny_dir, tmp_path/"b", model=qlora_model(tiny_dir), skip_all_evaluation=True, **kw)
    train = stats["train"]["loss"]
    assert len(stats["validation"]["loss"]) == 6 and all(b < a for a, b in zip(train, train[1:])), train
    assert (weights(model) - weights(quiet)).abs().max().item() < 1e-6
    assert mods and [m.support_avx512bf16_for_cpu for m in mods] == fast   # fast inference is back after fit


def test_training_layout_undoes_the_inference_repack():
    from types import SimpleNamespace as NS
    class Fake(torch.nn.Module):
        def __init__(self):
            super().__init__(); self.support_avx512bf16_for_cpu = True
            self.weight = NS(quant_state=NS(packing_format_for_cpu=False), data=None)
    m = torch.nn.Sequential(Fake(), Fake())
    with T.training_layout(m): assert [x.support_avx512bf16_for_cpu for x in m] == [False, False]
    assert [x.support_avx512bf16_for_cpu for x in m] == [True, True]


# ------------------------------------------------------------------ every trainer key: honoured or declared
def _keys(model, prefix):
    for name, f in model.model_fields.items():
        ann = f.annotation
        sub = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and hasattr(a, "model_fields")), None)
        if sub is not None: yield from _keys(sub, f"{prefix}{name}.")
        else: yield f"{prefix}{name}"


def differ(a, b): return (weights(a[0]) - weights(b[0])).abs().max().item() > 1e-7


HONOURED = {  # key: (trainer overrides, check(default run, this run))
    "type": None, "learning_rate": (dict(learning_rate=0.05), differ),
    "epochs": (dict(train_steps=None, epochs=2), lambda d, r: r[1]["steps_done"] == 16),
    "train_steps": (dict(train_steps=3), lambda d, r: r[1]["steps_done"] == 3),
    "batch_size": (dict(batch_size=4), lambda d, r: r[1]["batch_size"] == 4 and differ(d, r)),
    "eval_batch_size": (dict(eval_batch_size=1), lambda d, r: abs(r[1]["validation"]["loss"][0] - d[1]["validation"]["loss"][0]) < 1e-4),
    "gradient_accumulation_steps": (dict(gradient_accumulation_steps=2), lambda d, r: r[1]["gradient_accumulation_steps"] == 2 and differ(d, r)),
    "max_batch_size": None,  # a cap for batch_size: auto on a GPU (tested with resolve_batch_size)
    "eval_steps": (dict(eval_steps=1, eval_batch_size=1), lambda d, r: r[1]["validation"]["loss"][0] != d[1]["validation"]["loss"][0]),
    "early_stop": (dict(early_stop=0, learning_rate=1.0, train_steps=8), lambda d, r: r[1]["early_stopped"] and r[1]["steps_done"] < 8),
    "optimizer.type": (dict(optimizer=dict(type="sgd")), differ),
    "optimizer.betas": (dict(optimizer=dict(betas=(0.5, 0.9))), differ),
    "optimizer.eps": (dict(optimizer=dict(eps=1e-1)), differ),
    "optimizer.weight_decay": (dict(optimizer=dict(weight_decay=0.5)), differ),
    "optimizer.momentum": (dict(optimizer=dict(type="sgd", momentum=0.9)), None),
    "optimizer.nesterov": (dict(optimizer=dict(type="sgd", momentum=0.9, nesterov=True)), None),
    "optimizer.amsgrad": (dict(optimizer=dict(amsgrad=True), learning_rate_scheduler=dict(warmup_fraction=0.0, decay=None)), differ),
    "optimizer.dampening": (dict(optimizer=dict(type="sgd", momentum=0.9, dampening=0.5)), None),
    "optimizer.rho": (dict(optimizer=dict(type="adadelta", rho=0.5)), None),
    "optimizer.lr_decay": (dict(optimizer=dict(type="adagrad", lr_decay=0.5)), None),
    "optimizer.initial_accumulator_value": (dict(optimizer=dict(type="adagrad", initial_accumulator_value=1.0)), None),
    "optimizer.alpha": (dict(optimizer=dict(type="rmsprop", alpha=0.5)), None),
    "optimizer.centered": (dict(optimizer=dict(type="rmsprop", centered=True)), None),
    "optimizer.momentum_decay": (dict(optimizer=dict(type="nadam", momentum_decay=0.5)), None),
    "optimizer.max_unorm": (dict(optimizer=dict(type="lamb", max_unorm=0.001)), None),
    "optimizer.scale_parameter": (dict(optimizer=dict(type="adafactor", scale_parameter=True)), None),
    "optimizer.relative_step": (dict(learning_rate=1e-2, optimizer=dict(type="adafactor", relative_step=True)), "error"),
    "optimizer.warmup_init": (dict(optimizer=dict(type="adafactor", warmup_init=True)), "error"),
    "gradient_clipping.clipglobalnorm": (dict(gradient_clipping=dict(clipglobalnorm=1e-3)), differ),
    "gradient_clipping.clipnorm": (dict(gradient_clipping=dict(clipglobalnorm=None, clipnorm=1e-3)), differ),
    "gradient_clipping.clipvalue": (dict(gradient_clipping=dict(clipglobalnorm=None, clipvalue=1e-5)), differ),
    "enable_gradient_checkpointing": (dict(enable_gradient_checkpointing=True), lambda d, r: T.base_model_of(r[0]).is_gradient_checkpointing),
    "use_mixed_precision": (dict(use_mixed_precision=False), "precision"),
    "steps_per_checkpoint": (dict(steps_per_checkpoint=1), lambda d, r: len(r[1]["steps"]) == 4),
    "checkpoints_per_epoch": (dict(steps_per_checkpoint=0, checkpoints_per_epoch=4, train_steps=None, epochs=1), lambda d, r: len(r[1]["steps"]) == 4),
    "should_shuffle": (dict(should_shuffle=False), differ),
    "layers_to_freeze_regex": (dict(layers_to_freeze_regex=r"layers\.0\."), "frozen"),
    "compile": None,  # accelerate's dynamo backend: test_compile below
    "trackers": (dict(trackers=[]), lambda d, r: not (r[2]/"logs").exists() and (d[2]/"logs").exists()),
    "packing": (dict(packing=False), lambda d, r: abs(r[1]["train"]["loss"][0] - d[1]["train"]["loss"][0]) < 1e-4),
    "packing_max_sequences_per_pack": (dict(packing_max_sequences_per_pack=1), lambda d, r: abs(r[1]["train"]["loss"][0] - d[1]["train"]["loss"][0]) < 1e-4),
    "validation_field": None,  # checked against the output features at load (test_config)
    "validation_metric": (dict(validation_metric="perplexity"), lambda d, r: r[1]["best"]["metric"] == "perplexity"),
    "evaluate_training_set": (dict(evaluate_training_set=True), lambda d, r: len(r[1]["training_set"]["loss"]) == 2),
    "skip_all_evaluation": (dict(skip_all_evaluation=True), lambda d, r: r[1]["validation"]["loss"] == [] and r[1]["best"]["step"] is None),
    "seed": (dict(seed=1), differ),
    "learning_rate_scheduler.decay": (dict(learning_rate_scheduler=dict(decay="linear", warmup_fraction=0.0)), differ),
    "learning_rate_scheduler.warmup_fraction": (dict(learning_rate_scheduler=dict(warmup_fraction=0.5)), differ),
    "learning_rate_scheduler.warmup_evaluations": (dict(learning_rate_scheduler=dict(warmup_evaluations=1)), differ),
    "learning_rate_scheduler.decay_steps": (dict(learning_rate_scheduler=dict(decay="exponential", decay_steps=1, warmup_fraction=0.0)), "lr"),
    "learning_rate_scheduler.decay_rate": (dict(learning_rate_scheduler=dict(decay="exponential", decay_rate=0.1, decay_steps=1, warmup_fraction=0.0)), "lr"),
    "learning_rate_scheduler.staircase": (dict(learning_rate_scheduler=dict(decay="exponential", staircase=True, decay_steps=3, decay_rate=0.1, warmup_fraction=0.0)), "lr"),
    "learning_rate_scheduler.reduce_on_plateau": (dict(steps_per_checkpoint=1, train_steps=6, learning_rate=1.0, learning_rate_scheduler=dict(decay=None, warmup_fraction=0.0, reduce_on_plateau=3, reduce_on_plateau_patience=0, reduce_eval_split="validation")), "reduced"),
    "learning_rate_scheduler.reduce_on_plateau_patience": None,  # in reduce_lr_on_plateau's notebook tests and above
    "learning_rate_scheduler.reduce_on_plateau_rate": None,
    "learning_rate_scheduler.reduce_eval_metric": None,
    "learning_rate_scheduler.reduce_eval_split": None,
    "learning_rate_scheduler.t_0": (dict(learning_rate_scheduler=dict(t_0=2, warmup_fraction=0.0)), "lr"),
    "learning_rate_scheduler.t_mult": (dict(learning_rate_scheduler=dict(t_0=1, t_mult=2, warmup_fraction=0.0)), "lr"),
    "learning_rate_scheduler.eta_min": (dict(learning_rate_scheduler=dict(eta_min=5e-3, warmup_fraction=0.0)), "lr"),
    **{f"learning_rate_scheduler.{k}": (dict(learning_rate_scheduler=dict(decay="one_cycle", **{k: v})), "lr") for k, v in
       dict(max_lr=0.5, pct_start=0.9, div_factor=2.0, final_div_factor=2.0).items()},
    "learning_rate_scheduler.inverse_sqrt_warmup_steps": (dict(learning_rate_scheduler=dict(decay="inverse_sqrt", inverse_sqrt_warmup_steps=2)), "lr"),
    "learning_rate_scheduler.polynomial_power": (dict(learning_rate_scheduler=dict(decay="polynomial", polynomial_power=3.0)), "lr"),
    "learning_rate_scheduler.polynomial_end_lr": (dict(learning_rate_scheduler=dict(decay="polynomial", polynomial_end_lr=5e-3)), "lr"),
    "learning_rate_scheduler.wsd_warmup_fraction": (dict(learning_rate_scheduler=dict(decay="wsd", wsd_warmup_fraction=0.5)), "lr"),
    "learning_rate_scheduler.wsd_decay_fraction": (dict(learning_rate_scheduler=dict(decay="wsd", wsd_decay_fraction=0.5)), "lr"),
    "learning_rate_scheduler.wsd_stable_fraction": None,  # the rest of wsd: 1 - warmup - decay
}
LR_DEFAULT = dict(learning_rate_scheduler=dict(warmup_fraction=0.0))


def test_every_trainer_key_is_honoured_or_declared():
    keys = set(_keys(FinetuneTrainer, ""))
    compat = {k.removeprefix("trainer.") for k in COMPAT if k.startswith("trainer.")}
    assert keys == set(HONOURED) | compat, (keys - set(HONOURED) - compat, (set(HONOURED) | compat) - keys)
    schema = config_json_schema()["$defs"]["FinetuneTrainer"]["properties"]
    for k in compat:
        if "." not in k: assert schema[k].get("deprecated"), k
    opt = config_json_schema()["$defs"]["OptimizerConfig"]["properties"]
    assert opt["percentile_clipping"].get("deprecated") and opt["block_wise"].get("deprecated")
    for k in keys: assert "unused" not in str(FinetuneTrainer.model_fields.get(k, None) and FinetuneTrainer.model_fields[k].description).lower(), k


def _lrs(tmp, base, over):
    "The learning rate at each step of a run with `over`, read off the scheduler."
    cfg = cfg_for(base, **{**LR_DEFAULT, **over})
    plan = T.plan_steps(cfg.trainer, ROWS, 1)
    opt = T.make_optimizer(torch.nn.Linear(2, 2), cfg.trainer)
    s = T.make_scheduler(opt, cfg.trainer, plan)
    out = []
    for _ in range(plan.total_steps): out.append(s.get_last_lr()[0]); opt.step(); s.step()
    return out


@pytest.mark.parametrize("key", [k for k, v in HONOURED.items() if v is not None])
def test_trainer_key_has_its_effect(key, tiny_dir, tmp_path):
    over, check = HONOURED[key]
    if check == "lr":
        base_over = {k: v for k, v in over["learning_rate_scheduler"].items() if k in ("decay",)}
        assert _lrs(tmp_path, tiny_dir, over) != _lrs(tmp_path, tiny_dir, dict(learning_rate_scheduler=dict(warmup_fraction=0.0, **base_over)))
        return
    if check == "precision":
        assert T._accelerator(cfg_for(tiny_dir, **over), tmp_path).mixed_precision == "no"
        want = "bf16" if T._cpu_has_bf16() or (torch.cuda.is_available() and torch.cuda.is_bf16_supported()) else "no"
        assert T._accelerator(cfg_for(tiny_dir, use_mixed_precision=True), tmp_path).mixed_precision == want
        return
    if check == "error":
        with pytest.raises(LlmnbError, match="trainer.optimizer"): run(tiny_dir, tmp_path/"r", **over)
        return
    if check is None:  # an optimizer setting: the same optimizer without it gives other weights
        o = dict(over["optimizer"]); k = key.split(".")[1]; o.pop(k)
        if k == "momentum": o.pop("nesterov", None)
        if k == "nesterov": pass
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a, b = run(tiny_dir, tmp_path/"a", **{**over, "optimizer": o}), run(tiny_dir, tmp_path/"b", **over)
        assert differ(a, b), key
        return
    default = run(tiny_dir, tmp_path/"default")
    if check == "frozen":
        before = {k: v.clone() for k, v in tiny_llama(vocab_size=97).named_parameters()}
        model, _, _ = run(tiny_dir, tmp_path/"r", **over)
        for k, v in model.named_parameters():
            if ".layers.0." in k: assert torch.equal(v, before[k]), k
            elif "layers.1" in k and "weight" in k and "norm" not in k: assert not torch.equal(v, before[k]), k
        return
    got = run(tiny_dir, tmp_path/"r", **over)
    if check == "reduced": assert got[1]["learning_rate_reductions"] >= 1, got[1]; return
    assert check(default, got), key


def test_layers_to_freeze_regex_that_matches_nothing(tiny_dir, tmp_path):
    with pytest.raises(LlmnbError, match="layers_to_freeze_regex.*matches no parameter"):
        run(tiny_dir, tmp_path, layers_to_freeze_regex="no_such_layer")


def test_a_named_tracker_must_be_installed(tiny_dir, tmp_path):
    with pytest.raises(LlmnbError, match="trainer.trackers: aim is not installed"):
        T._accelerator(cfg_for(tiny_dir, trackers=["aim"]), tmp_path)


def test_compile_uses_accelerates_dynamo_backend(tiny_dir, tmp_path):
    acc = T._accelerator(cfg_for(tiny_dir, compile=True), tmp_path)
    assert acc.state.dynamo_plugin.backend.value.lower() == "inductor"


def test_seed_zero_means_zero(tiny_dir, tmp_path):
    cfg = cfg_for(tiny_dir, seed=0)
    assert T.plan_steps(cfg.trainer, ROWS, 1).seed == 0
    a, b, c = run(tiny_dir, tmp_path/"a", seed=0), run(tiny_dir, tmp_path/"b", seed=0), run(tiny_dir, tmp_path/"c", seed=42)
    assert not differ(a, b) and differ(a, c)


# ------------------------------------------------------------------ checkpoints and resume
def test_checkpoint_folders_load_with_plain_peft(tiny_dir, tmp_path):
    from peft import PeftModel
    _, stats, _ = run(tiny_dir, tmp_path, adapter=None)
    d = T.checkpoints(tmp_path)[-1]
    assert d.name == "step-4" and (d/"trainer_state.json").exists() and (d/"model.safetensors").exists()


def test_finished_full_finetune_keeps_one_copy_of_the_weights(tiny_dir, tmp_path):
    "Issue 15: a finished full fine-tune kept ~4x its weights in checkpoints/ (2 steps with optimizer state, and best/)."
    sizes = []
    orig = T.save_checkpoint
    def record(r):
        d = orig(r); sizes.append(sum(f.stat().st_size for f in (r.run_dir/"checkpoints").rglob("*") if f.is_file())); return d
    import unittest.mock
    with unittest.mock.patch.object(T, "save_checkpoint", record):
        model, stats, _ = run(tiny_dir, tmp_path, adapter=None)
    weights_bytes = (T.checkpoints(tmp_path)[-1]/"model.safetensors").stat().st_size
    kept = sum(f.stat().st_size for f in (tmp_path/"checkpoints").rglob("*") if f.is_file())
    assert max(sizes) > 3 * weights_bytes   # while training: weights, optimizer state, best/
    assert kept < 1.05 * weights_bytes and [p.name for p in T.checkpoints(tmp_path)] == ["step-4"]
    assert not (tmp_path/"checkpoints"/"best").exists()
    with pytest.raises(LlmnbError, match="finished.*nothing to resume"): run(tiny_dir, tmp_path, adapter=None, resume=True)


def test_early_checkpoint_in_a_long_first_epoch(tiny_dir, tmp_path):
    rows = ROWS * 4   # 32 steps in the epoch; the first checkpoint comes after 8, not at the end
    written, orig = [], T.save_checkpoint
    def record(r): written.append(orig(r).name); return written[-1]
    import unittest.mock
    with unittest.mock.patch.object(T, "save_checkpoint", record):
        _, stats, _ = run(tiny_dir, tmp_path, rows=rows, train_steps=9, steps_per_checkpoint=0)
    assert written == ["step-8", "step-9"] and [p.name for p in T.checkpoints(tmp_path)] == ["step-9"]


class Crash(Exception): pass


def test_resume_continues_exactly(tiny_dir, tmp_path, monkeypatch):
    full_model, full, _ = run(tiny_dir, tmp_path/"a", train_steps=6, steps_per_checkpoint=2)
    orig = T.train_step
    def crash(r, group):
        if r.state["step"] == 3: raise Crash()
        return orig(r, group)
    monkeypatch.setattr(T, "train_step", crash)
    with pytest.raises(Crash): run(tiny_dir, tmp_path/"b", train_steps=6, steps_per_checkpoint=2)
    monkeypatch.setattr(T, "train_step", orig)
    assert [p.name for p in T.checkpoints(tmp_path/"b")][-1] == "step-2"
    model, stats, _ = run(tiny_dir, tmp_path/"b", train_steps=6, steps_per_checkpoint=2, resume=True)
    assert stats["steps_done"] == 6
    assert (weights(model) - weights(full_model)).abs().max().item() < 1e-5
    assert stats["train"]["loss"] == pytest.approx(full["train"]["loss"], abs=1e-5)
    assert stats["validation"]["loss"] == pytest.approx(full["validation"]["loss"], abs=1e-5)


def test_resume_refuses_another_config_or_data(tiny_dir, tmp_path):
    run(tiny_dir, tmp_path, train_steps=2)
    with pytest.raises(LlmnbError, match="different config or training data"):
        run(tiny_dir, tmp_path, train_steps=2, learning_rate=0.5, resume=True)
    with pytest.raises(LlmnbError, match="different config or training data"):
        run(tiny_dir, tmp_path, rows=ROWS[:8], train_steps=2, resume=True)


def test_resume_without_checkpoint_starts_from_scratch(tiny_dir, tmp_path):
    with pytest.warns(UserWarning, match="no checkpoint.*starting from scratch"):
        _, stats, _ = run(tiny_dir, tmp_path, train_steps=2, resume=True)
    assert stats["steps_done"] == 2


# ------------------------------------------------------------------ validation_metric: sequence_accuracy (the default)
@pytest.mark.parametrize("metric", ["sequence_accuracy", "loss"])
def test_validation_metric_keeps_the_best_evaluation_and_restores_it(metric, tiny_dir, tmp_path):
    "The kept weights are the evaluation with the best metric (accuracy: the highest, a tie to the lower loss)."
    model, s, _ = run(tiny_dir, tmp_path/"r", train_steps=8, steps_per_checkpoint=2, learning_rate=5e-2, validation_metric=metric)
    acc, loss = s["validation"]["sequence_accuracy"], s["validation"]["loss"]
    i = max(range(len(acc)), key=lambda j: (acc[j], -loss[j])) if metric != "loss" else min(range(len(loss)), key=loss.__getitem__)
    assert s["best"]["metric"] == metric and s["best"]["value"] == (acc[i] if metric != "loss" else loss[i])
    again = T.evaluate_loss(model, ROWS[:4], 2, 0, "cpu")   # the model holds the kept evaluation's weights
    assert math.isclose(again["loss"], loss[i], rel_tol=1e-4) and again["sequence_accuracy"] == acc[i]


def test_sequence_accuracy_is_the_default_for_finetune_only():
    assert FinetuneTrainer(type="finetune").validation_metric == "sequence_accuracy"
    cfg = lambda t: load_config(dict(base_model="x", input_features=[dict(name="q", type="text")],
                                     output_features=[dict(name="a", type="text")], trainer=t))
    assert cfg(dict(type="dpo")).trainer.validation_metric == "loss"
    assert cfg(dict(type="finetune", validation_metric=None)).trainer.validation_metric == "loss"   # Ludwig's null
    with pytest.raises(LlmnbError, match="validation_metric"): cfg(dict(type="finetune", validation_metric="bleu"))
