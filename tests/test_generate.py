"Decoding strategies (our contrastive and diverse beam search against plain references), per-call overrides (A27), the comparison table."
import pandas as pd
import pytest
import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM
from llmnb.generate import generate_batch, decoding_strategy, STRATEGIES
from llmnb.widgets import compare_decoding, _parse_setting
from llmnb.api import LLM
from llmnb.config import ConfigError

class CharTok:
    pad_token_id, eos_token_id, bos_token_id = 0, 1, None
    def decode(self, ids, skip_special_tokens=True): return "".join(chr(32 + i) for i in ids if i > 1)

@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, vocab_size=97, max_position_embeddings=256)).eval()

PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17], [20, 21, 22, 23, 24]]

def gcfg(**kw): return GenerationConfig(**{"max_new_tokens": 8, "pad_token_id": 0, "eos_token_id": 1, **kw})

def ids_of(res): return [r["ids"] for r in res]

# ------------------------------------------------------------------ strategy selection
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_runs_batched_in_order(tiny, name):
    torch.manual_seed(1)
    gc = gcfg(**STRATEGIES[name])
    test_name = decoding_strategy(gc)
    assert test_name == name
    res = generate_batch(tiny, CharTok(), PROMPTS, gc, batch_size=3, scores=True)
    assert len(res) == len(PROMPTS)
    for r, p in zip(res, PROMPTS):
        assert r["prompt_ids"] == p and 1 <= len(r["ids"]) <= 8
        assert len(r["probabilities"]) == len(r["ids"]) and all(0 < x <= 1 + 1e-5 for x in r["probabilities"])
    if "sampling" not in name:   # deterministic strategies: batching does not change the answer
        assert ids_of(res) == [generate_batch(tiny, CharTok(), [p], gc)[0]["ids"] for p in PROMPTS]

def test_sampling_is_seeded_and_varies(tiny):
    gc = gcfg(do_sample=True, temperature=1.5, top_k=0)
    torch.manual_seed(3); a = ids_of(generate_batch(tiny, CharTok(), PROMPTS, gc))
    torch.manual_seed(3); b = ids_of(generate_batch(tiny, CharTok(), PROMPTS, gc))
    torch.manual_seed(4); c = ids_of(generate_batch(tiny, CharTok(), PROMPTS, gc))
    assert a == b and a != c

# ------------------------------------------------------------------ contrastive search
def naive_contrastive(model, prompt, k, alpha, steps):
    "Textbook contrastive search, no cache: full forward passes for the context and for every candidate."
    ids = list(prompt)
    for _ in range(steps):
        with torch.no_grad():
            o = model(torch.tensor([ids]), output_hidden_states=True)
        ctx = torch.nn.functional.normalize(o.hidden_states[-1][0], dim=-1)
        p = o.logits[0, -1].softmax(-1)
        top_p, top_i = p.topk(k)
        best, best_s = None, None
        for pr, t in zip(top_p.tolist(), top_i.tolist()):
            with torch.no_grad():
                h = model(torch.tensor([ids + [t]]), output_hidden_states=True).hidden_states[-1][0, -1]
            s = (1 - alpha) * pr - alpha * (ctx @ torch.nn.functional.normalize(h, dim=-1)).max().item()
            if best_s is None or s > best_s: best, best_s = t, s
        ids.append(best)
        if best == 1: break
    return ids[len(prompt):]

@pytest.mark.parametrize("alpha", [0.3, 0.6, 0.9])
def test_contrastive_matches_textbook_version(tiny, alpha):
    res = generate_batch(tiny, CharTok(), PROMPTS, gcfg(penalty_alpha=alpha, top_k=4), batch_size=4)
    for r, p in zip(res, PROMPTS):   # batched + left-padded + cached = one prompt, no cache
        assert r["ids"] == naive_contrastive(tiny, p, 4, alpha, 8)

def test_contrastive_without_penalty_is_greedy(tiny):
    assert ids_of(generate_batch(tiny, CharTok(), PROMPTS, gcfg(penalty_alpha=1e-9, top_k=5))) == ids_of(generate_batch(tiny, CharTok(), PROMPTS, gcfg()))

def test_contrastive_penalty_changes_text(tiny):
    assert ids_of(generate_batch(tiny, CharTok(), PROMPTS, gcfg(penalty_alpha=0.9, top_k=6, max_new_tokens=12))) != \
           ids_of(generate_batch(tiny, CharTok(), PROMPTS, gcfg(max_new_tokens=12)))

def test_contrastive_honours_logits_processors(tiny):
    "transformers' processors still apply to our loop: min_new_tokens and bad_words_ids."
    greedy = ids_of(generate_batch(tiny, CharTok(), PROMPTS, gcfg(penalty_alpha=0.5, top_k=4)))
    banned = sorted({t for g in greedy for t in g} - {1})[:3]
    out = ids_of(generate_batch(tiny, CharTok(), PROMPTS, gcfg(penalty_alpha=0.5, top_k=4, bad_words_ids=[[t] for t in banned])))
    assert not {t for g in out for t in g} & set(banned)

# ------------------------------------------------------------------ diverse beam search
def test_group_beam_without_penalty_is_beam_search(tiny):
    "Two groups of 2 beams and no diversity penalty: each group is a 2-beam search (transformers' own)."
    for lp in (1.0, 0.0, 2.0):
        ours = generate_batch(tiny, CharTok(), PROMPTS, gcfg(num_beams=4, num_beam_groups=2, diversity_penalty=0.0, length_penalty=lp), scores=True)
        ref = generate_batch(tiny, CharTok(), PROMPTS, gcfg(num_beams=2, length_penalty=lp), scores=True)
        assert ids_of(ours) == ids_of(ref)
        for a, b in zip(ours, ref): assert a["probabilities"] == pytest.approx(b["probabilities"], rel=1e-4)

def test_group_beam_one_beam_per_group_is_greedy(tiny):
    "One group with one beam is greedy search."
    ours = ids_of(generate_batch(tiny, CharTok(), PROMPTS, gcfg(num_beams=3, num_beam_groups=3, diversity_penalty=0.0)))
    assert ours == ids_of(generate_batch(tiny, CharTok(), PROMPTS, gcfg()))

def test_group_beam_penalty_makes_groups_differ(tiny):
    "With a huge penalty, the second group never picks the token the first group picked at the same step."
    from llmnb.generate import _left_pad
    gc = gcfg(num_beams=2, num_beam_groups=2, diversity_penalty=1e4, num_return_sequences=2, return_dict_in_generate=True, max_new_tokens=6, eos_token_id=None)
    ids, mask = _left_pad(PROMPTS, 0, "cpu")
    from llmnb.generate import _custom_generate
    out = tiny.generate(input_ids=ids, attention_mask=mask, generation_config=gc, custom_generate=_custom_generate(gc))
    seq = out.sequences[:, ids.shape[1]:].view(len(PROMPTS), 2, -1)
    assert (seq[:, 0] != seq[:, 1]).all()   # at every step
    assert out.sequences_scores.shape == (len(PROMPTS) * 2,)

def test_group_beam_returns_n_sequences_sorted(tiny):
    from llmnb.generate import _left_pad, _custom_generate
    gc = gcfg(num_beams=6, num_beam_groups=3, diversity_penalty=0.5, num_return_sequences=3, return_dict_in_generate=True)
    ids, mask = _left_pad(PROMPTS, 0, "cpu")
    out = tiny.generate(input_ids=ids, attention_mask=mask, generation_config=gc, custom_generate=_custom_generate(gc))
    s = out.sequences_scores.view(len(PROMPTS), 3)
    assert (s[:, :-1] >= s[:, 1:]).all()

@pytest.mark.parametrize("es", [True, False, "never"])
def test_group_beam_early_stopping_values(tiny, es):
    res = generate_batch(tiny, CharTok(), PROMPTS, gcfg(num_beams=4, num_beam_groups=2, diversity_penalty=1.0, early_stopping=es), scores=True)
    assert all(1 <= len(r["ids"]) <= 8 for r in res)

# ------------------------------------------------------------------ config → GenerationConfig (every field), overrides
def test_every_generation_field_reaches_transformers(tiny_model_dir):
    from llmnb.config import GenerationSettings
    from llmnb.generate import generation_config
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = dict(base_model=str(tiny_model_dir), input_features=[dict(name="q", type="text")], output_features=[dict(name="a", type="text")])
    special = dict(do_sample=True, num_beams=4, temperature=0.7, top_k=7, top_p=0.9, typical_p=0.95, epsilon_cutoff=3e-4, eta_cutoff=1e-3,
                   early_stopping="never", length_penalty=0.5, max_time=30.0, min_new_tokens=2, max_new_tokens=9, use_cache=False,
                   repetition_penalty=1.3, encoder_repetition_penalty=1.1, no_repeat_ngram_size=3, bad_words_ids=[[5]],
                   renormalize_logits=True, forced_bos_token_id=3, forced_eos_token_id=4, remove_invalid_values=True,
                   exponential_decay_length_penalty=(3, 1.5), suppress_tokens=[7], begin_suppress_tokens=[8], forced_decoder_ids=[[1, 9]],
                   sequence_bias=[[[10], 1.0]], guidance_scale=1.5, prompt_lookup_num_tokens=3, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    gc = generation_config(LLM(dict(base, generation=special)).config, tok, 2048)
    lists = lambda x: [lists(i) for i in x] if isinstance(x, (list, tuple)) else x
    for k, v in special.items(): assert lists(getattr(gc, k)) == lists(v), k
    # the rest of the section: each field set alone
    extras = dict(penalty_alpha=dict(penalty_alpha=0.6, top_k=4), num_beam_groups=dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5),
                  min_length=dict(min_length=3))
    for k, over in extras.items():
        gc = generation_config(LLM(dict(base, generation=over)).config, tok, 2048)
        for kk, v in over.items(): assert getattr(gc, kk) == v, kk
    covered = set(special) | {k for o in extras.values() for k in o} | {"max_length", "force_words_ids"}  # force_words_ids: refused
    assert covered >= set(GenerationSettings.model_fields), set(GenerationSettings.model_fields) - covered

def test_bad_override_names_the_key(tiny_model_dir):
    llm = LLM(dict(base_model=str(tiny_model_dir), input_features=[dict(name="q", type="text")], output_features=[dict(name="a", type="text")]))
    with pytest.raises(ConfigError, match="generation_config"):
        llm.predict(pd.DataFrame(dict(q=["x"])), generation_config=dict(num_beams=0))
    with pytest.raises(ConfigError, match="num_beam_groups"):
        llm.predict(pd.DataFrame(dict(q=["x"])), generation_config=dict(num_beams=3, num_beam_groups=2))

def test_a27_overrides_apply_to_one_call_only(tiny_model_dir):
    "A27: text→text, trainer none, num_beams 4, max_new_tokens 5, 20 rows; then min 2 / max 3 for one call."
    rows = pd.DataFrame(dict(q=[f"Tell me about {w}." for w in "abcdefghijklmnopqrst"]))
    llm = LLM(dict(base_model=str(tiny_model_dir), input_features=[dict(name="q", type="text")], output_features=[dict(name="a", type="text")],
                   generation=dict(num_beams=4, max_new_tokens=5)))
    df = llm.predict(rows)
    assert {"a_predictions", "a_probabilities", "a_probability", "a_response"} <= set(df.columns) and len(df) == 20
    assert all(1 <= n <= 5 for n in df["a_num_tokens"])
    df2 = llm.predict(rows, generation_config=dict(min_new_tokens=2, max_new_tokens=3))
    assert all(2 <= n <= 3 for n in df2["a_num_tokens"]), df2["a_num_tokens"].tolist()
    assert llm.config.generation.max_new_tokens == 5 and llm.config.generation.min_new_tokens is None
    df3 = llm.predict(rows.head(4))
    assert all(n <= 5 for n in df3["a_num_tokens"])

# ------------------------------------------------------------------ comparison table
def test_compare_decoding_table(tiny_model_dir):
    llm = LLM(dict(base_model=str(tiny_model_dir), input_features=[dict(name="q", type="text")], output_features=[dict(name="a", type="text")],
                   prompt=dict(template="Q: {q}\nA:"), generation=dict(max_new_tokens=4)))
    df = compare_decoding(llm, pd.DataFrame(dict(q=["one", "two", "three"])), {"g": {}, "b": dict(num_beams=3), "d": STRATEGIES["diverse beam search"]})
    assert df.shape == (3, 1 + 3 * 3) and df["prompt"].tolist() == ["Q: one\nA:", "Q: two\nA:", "Q: three\nA:"]
    # the greedy column equals a plain predict
    assert df["g: output"].tolist() == llm.predict(pd.DataFrame(dict(q=["one", "two", "three"])))["a_predictions"].tolist()
    assert all(1 <= n <= 4 for c in ("g", "b", "d") for n in df[f"{c}: tokens"])
    assert compare_decoding(llm, "Q: x\nA:", {"g": {}}).shape == (1, 4)
    with pytest.raises(ConfigError, match="num_beams"):
        compare_decoding(llm, ["x"], {"bad": dict(num_beams=-1)})

def test_parse_setting():
    assert _parse_setting("") == {} and _parse_setting('{"top_k": 3}') == {"top_k": 3}
    for bad in ("top_k: 3", "[1]", "{"):
        with pytest.raises(ValueError, match="JSON object"): _parse_setting(bad)

def test_widget_builds_and_runs(tiny_model_dir):
    from llmnb.widgets import decoding_widget
    llm = LLM(dict(base_model=str(tiny_model_dir), input_features=[dict(name="q", type="text")], output_features=[dict(name="a", type="text")],
                   generation=dict(max_new_tokens=3)))
    w = decoding_widget(llm, pd.DataFrame(dict(q=["a", "b"])), n_settings=2)
    pick, settings, run, out = w.children
    assert len(settings.children) == 2
    dd, ta = settings.children[1].children
    dd.value = "contrastive search"
    assert _parse_setting(ta.value) == STRATEGIES["contrastive search"]
    run.click()
    assert w.table is not None and w.table.shape == (2, 7) and "2. contrastive search: output" in w.table.columns
