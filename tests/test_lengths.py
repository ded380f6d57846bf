"""Sequence lengths (A15, A16, A20, cuts reported per limit), length statistics, RoPE scaling (A13), NEFTune (A34) and
chat templates (the loss covers only the assistant answer and its end-of-turn token)."""
import math
import pandas as pd
import pytest
import torch

from llmnb.config import ConfigError, load_config
from llmnb.widgets import length_explorer
from llmnb.tokens import check_template_length, length_stats, template_tokens, token_lengths
from llmnb.model import load_tokenizer
from llmnb.train import add_neftune
from llmnb.tokens import Limits, sequence_limits, tokenize_rows

LONG = "This is a very long template that keeps going on and on, far beyond five tokens of text: {instruction}"
ROWS = pd.DataFrame(dict(instruction=["name a colour", "name a fruit that is yellow and long", "say hi"] * 3,
                         answer=["red", "banana", "hi there, how are you"] * 3))


@pytest.fixture(scope="module")
def tok(embedded_dir): return load_tokenizer(embedded_dir)


def cfg_dict(base="smollm2-135m-instruct", template=LONG, inp=None, glob=None, out=None, **over):
    return dict(base_model=str(base), input_features=[dict(name="instruction", type="text", preprocessing=dict(max_sequence_length=inp))],
                output_features=[dict(name="answer", type="text", preprocessing=dict(max_sequence_length=out))],
                prompt=dict(template=template), preprocessing=dict(global_max_sequence_length=glob, split=dict(type="random", probabilities=[1.0, 0.0, 0.0])),
                trainer=dict(type="finetune", train_steps=1, batch_size=3, epochs=1)) | over


def test_a16_limits_default_null():
    c = load_config(cfg_dict())
    assert c.input_feature.preprocessing.max_sequence_length is None and c.output_feature.preprocessing.max_sequence_length is None
    assert c.preprocessing.global_max_sequence_length is None


@pytest.mark.parametrize("glob", [None, 4096])
def test_a15_total_never_above_context(glob):
    assert sequence_limits(load_config(cfg_dict(glob=glob)), 2048).total == 2048
    assert sequence_limits(load_config(cfg_dict(glob=100)), 2048).total == 100
    assert sequence_limits(load_config(cfg_dict(glob=glob)), 2048, reserve=48).total == 2000


@pytest.mark.parametrize("inp,glob,fails", [(5, None, True), (None, 5, True), (5, 5, True), (100, 100, False), (100, None, False), (None, None, False)])
def test_a20_template_too_long(tok, inp, glob, fails):
    c = load_config(cfg_dict(inp=inp, glob=glob))
    lim = sequence_limits(c, 8192)
    if not fails: return check_template_length(c, tok, lim)
    with pytest.raises(ConfigError) as e: check_template_length(c, tok, lim)
    n = template_tokens(c, tok)
    if inp: assert f"input_features[0].preprocessing.max_sequence_length: the prompt template alone is {n} tokens, over this limit (got 5)" in str(e.value)
    if glob: assert f"preprocessing.global_max_sequence_length: the prompt template alone is {n} tokens" in str(e.value)


def test_a20_train_fails_before_tokenising(monkeypatch, tiny_model_dir, tmp_path):
    import llmnb.api as api
    monkeypatch.setattr(api, "tokenize_dataset", lambda *a, **k: (_ for _ in ()).throw(AssertionError("tokenised first")))
    with pytest.raises(ConfigError, match="the prompt template alone is"):
        api.LLM(cfg_dict(tiny_model_dir, inp=5)).train(ROWS, output_directory=tmp_path / "r", progress=False)


def test_template_tokens_counts_task_and_chat(tok):
    c = load_config(cfg_dict() | dict(prompt=dict(template="{__task__} Input: {instruction}", task="Be brief.")))
    assert template_tokens(c, tok) == len(tok("Be brief. Input: ")["input_ids"])
    chat = load_config(cfg_dict() | dict(prompt=dict(template=LONG, chat_template=True, system="You are terse.")))
    text = tok.apply_chat_template([{"role": "system", "content": "You are terse."}, {"role": "user", "content": LONG.replace("{instruction}", "")}],
                                   tokenize=False, add_generation_prompt=True)
    assert template_tokens(chat, tok) == len(tok(text, add_special_tokens=False)["input_ids"])


def test_length_stats_numbers(tok):
    c = load_config(cfg_dict(inp=30, out=2, glob=32))
    st = length_stats(c, ROWS, tok=tok, context_length=2048)
    direct_p = [len(tok(LONG.format(instruction=i))["input_ids"]) for i in ROWS.instruction]
    # the prompt ends in a word ("...: name a colour"), so the answer is written after a space: " red"
    direct_t = [len(tok(" " + a, add_special_tokens=False)["input_ids"]) for a in ROWS.answer]
    assert st.lengths.prompt.tolist() == direct_p and st.lengths.target.tolist() == direct_t
    assert (st.lengths.total == st.lengths.prompt + st.lengths.target + 1).all()
    assert st.limits == Limits(target=2, prompt=30, total=32)
    cut = st.cut()
    assert cut["target"] == sum(t > 2 for t in direct_t) / len(ROWS)
    assert cut["prompt"] == sum(p > 30 for p in direct_p) / len(ROWS)
    s = st.suggest(100)
    assert (s.prompt, s.target, s.total) == (max(direct_p), max(direct_t), max(st.lengths.total))
    assert st.cut(s) == dict(target=0.0, prompt=0.0, total=0.0)
    assert st.suggest(50).prompt == math.ceil(pd.Series(direct_p).quantile(0.5))
    assert length_stats(c, ROWS, tok=tok, context_length=20).suggest(100).total == 20  # never above the context
    summary = st.summary()
    assert summary.loc["p100", "prompt"] == max(direct_p) and "mean" in summary.index
    w = length_explorer(st, percentile=60)
    w.slider.value = 100
    assert f"input max_sequence_length: {max(direct_p)}" in w.text.value


def test_token_lengths_without_target(tok):
    df = token_lengths(load_config(cfg_dict()), tok, ROWS[["instruction"]])
    assert df.target.isna().all() and len(df) == len(ROWS)


@pytest.mark.slow
def test_training_reports_cuts_per_limit(tmp_path):
    from llmnb.api import LLM
    c = cfg_dict(template="Q: {instruction}\nA:", inp=6, out=2, glob=8)
    llm = LLM(c)
    stats = llm.train(ROWS, output_directory=tmp_path / "run", progress=False)
    tr = stats["truncation"]
    st = llm.length_stats(ROWS)
    rep = st.report()
    assert tr == {k: getattr(rep, k) for k in tr}  # the statistics predicted what training cut
    assert tr["target_rows"] == 3 and tr["prompt_rows"] > 0 and tr["total_rows"] > 0 and tr["total_tokens"] > 0


# ---- chat templates ------------------------------------------------------------------------------------------------
def test_chat_template_labels_are_the_answer_and_end_of_turn(tok):
    from llmnb.generate import encode_prompts
    c = load_config(cfg_dict(template="Say {instruction}") | dict(prompt=dict(template="Say {instruction}", chat_template=True, system="Be brief.")))
    out = tokenize_rows(["Say hello"], ["Hello there!"], tok, c, Limits())
    ids, n = out["input_ids"][0], out["n_prompt"][0]
    assert tok.decode(ids[n:]) == "Hello there!<|im_end|>"
    prompt = tok.decode(ids[:n])
    assert prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>") and prompt.endswith("<|im_start|>user\nSay hello<|im_end|>\n<|im_start|>assistant\n")
    enc, _ = encode_prompts(["Say hello"], tok, c, Limits())
    assert enc[0] == ids[:n]  # inference reads exactly the training prompt
    auto = load_config(cfg_dict(template="Say {instruction}") | dict(prompt=dict(template="Say {instruction}", chat_template="auto")))
    assert tok.decode(tokenize_rows(["Say hello"], ["Hi"], tok, auto, Limits())["input_ids"][0]).endswith("assistant\nHi<|im_end|>")


# ---- model parameters ------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["linear", "dynamic"])
def test_a13_rope_scaling_on_the_real_model(kind):
    from llmnb.api import LLM
    plain = LLM(cfg_dict(trainer=dict(type="none")))
    scaled = LLM(cfg_dict(trainer=dict(type="none"), model_parameters=dict(rope_scaling=dict(rope_type=kind, factor=2.0))))
    rp = scaled.load_base().model.config.rope_parameters
    assert rp["rope_type"] == kind and rp["factor"] == 2.0 and rp.get("rope_theta") == plain.load_base().model.config.rope_parameters.get("rope_theta")
    assert scaled.context_length == 2 * plain.context_length
    assert sequence_limits(scaled.config, scaled.context_length).total == 2 * plain.context_length


def test_a34_neftune_fractional_alpha(tiny_model_dir):
    from transformers import AutoModelForCausalLM
    assert load_config(cfg_dict(model_parameters=dict(neftune_noise_alpha=0.5))).model_parameters.neftune_noise_alpha == 0.5
    m = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    emb, x = m.get_input_embeddings(), torch.randint(0, 100, (2, 7))
    clean = emb(x).detach()
    h = add_neftune(m, 0.5)
    m.train(); noisy = emb(x).detach()
    m.eval(); quiet = emb(x).detach()
    h.remove()
    assert not torch.equal(noisy, clean) and torch.equal(quiet, clean)
    bound = 0.5 / math.sqrt(7 * clean.shape[-1])
    assert (noisy - clean).abs().max() <= bound + 1e-7 and (noisy - clean).abs().max() > bound / 4
