"Category outputs: matching policy (A26), the label constraint, label probabilities, zero-shot without train (A25, W-U5), fine-tuning on labels."
import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM, LogitsProcessor
from llmnb.api import LLM
from llmnb.config import ConfigError, load_config
from llmnb.data import DataError
from llmnb.evaluate import (extract_category, match_rules, category_vocab, LabelConstraint, label_token_ids, label_probabilities)
from llmnb.generate import generate_batch

R = lambda **kw: {k: dict(type=t, value=v) for k, (t, v) in kw.items()}

# ------------------------------------------------------------------ A26 and the matching policy
def test_a26_matcher():
    rules = {"neutral": dict(type="contains", value="neutral"), "positive": dict(type="contains", value="positive")}
    assert extract_category("The answer: POSITIVE.", rules, "neutral") == "positive"
    assert extract_category("xyz", rules, "neutral") == "neutral"
    # our improvement: a bad regex is a config error naming the key, before any model runs
    with pytest.raises(ConfigError, match=r"decoder\.match\.x\.value.*invalid regular expression"):
        load_config(dict(base_model="smollm2-135m-instruct", input_features=[dict(name="t", type="text")],
                         output_features=[dict(name="y", type="category", preprocessing=dict(fallback_label="x"),
                                               decoder=dict(match={"x": dict(type="regex", value="(")}))]))

@pytest.mark.parametrize("text,want", [
    ("not positive", "positive"),                      # no `not positive` rule: the earliest label mentioned
    ("Negative, not positive.", "negative"),
    ("positive... or negative", "positive"),
    ("I'd say NEGATIVE", "negative"),
    ("", "neutral"), ("none of them", "neutral"),
])
def test_earliest_match_wins(text, want):
    assert extract_category(text, R(positive=("contains", "positive"), negative=("contains", "negative")), "neutral") == want

def test_longest_wins_on_ties_then_rule_order():
    rules = R(positive=("contains", "positive"), **{"not positive": ("contains", "not positive")})
    assert extract_category("not positive", rules, "n") == "not positive"
    assert extract_category("Positive, not positive", rules, "n") == "positive"
    same = R(a=("contains", "cat"), b=("regex", "c.t"))
    assert extract_category("a cat", same, "n") == "a"              # same start and length: first rule listed
    assert extract_category("a cat", dict(reversed(list(same.items()))), "n") == "b"

def test_rule_values_are_case_insensitive():
    assert extract_category("it is positive", R(P=("contains", "POSITIVE")), "n") == "P"
    assert extract_category("It Is Positive", R(P=("regex", r"\bPOSITIVE\b")), "n") == "P"
    assert extract_category("positively", R(P=("regex", r"\bpositive\b")), "n") == "n"

@pytest.mark.parametrize("text,want", [
    ('{"label": "Spam"}', "spam"), ('```json\n{"category": "ham"}\n```', "ham"), ('{"value": "spam", "label": "ham"}', "ham"),
    ('{"x": "spam"}', "spam"), ('"ham"', "ham"), ("not json", "unknown"), ('{"label": "eggs"}', "unknown"),
])
def test_json_schema_rules(text, want):
    assert extract_category(text, R(spam=("json_schema", "spam"), ham=("json_schema", "ham")), "unknown") == want

def test_rules_derived_from_vocab_when_match_is_omitted():
    cfg = load_config(dict(base_model="smollm2-135m-instruct", input_features=[dict(name="t", type="text")],
                           output_features=[dict(name="y", type="category", preprocessing=dict(fallback_label="neutral", vocab=["positive", "negative"]))]))
    o = cfg.output_feature
    vocab = category_vocab(o)
    assert vocab == ["positive", "negative", "neutral"]
    assert match_rules(o, vocab) == {v: dict(type="contains", value=v) for v in vocab}
    assert extract_category("Negative!", match_rules(o, vocab), "neutral") == "negative"
    # vocab from data when the config has none, first-seen order, fallback appended
    o2 = load_config(dict(base_model="smollm2-135m-instruct", input_features=[dict(name="t", type="text")],
                          output_features=[dict(name="y", type="category", preprocessing=dict(fallback_label="other"))])).output_feature
    assert category_vocab(o2, ["b", "a", "b", None, ""]) == ["b", "a", "other"]

# ------------------------------------------------------------------ constraint and probabilities on a tiny model
class CharTok:
    pad_token_id, eos_token_id = 0, 1
    def decode(self, ids, skip_special_tokens=True): return " ".join(map(str, ids))

@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, vocab_size=97, max_position_embeddings=256)).eval()


class _LabelMask(LogitsProcessor):
    "The oracle: `LabelConstraint` as a logits processor, so `generate` decodes under the same constraint."
    def __init__(self, label_ids, eos, prompt_length=None): self.c, self.prompt_length = LabelConstraint(label_ids, eos), prompt_length
    def __call__(self, input_ids, scores):
        if self.prompt_length is None: self.prompt_length = input_ids.shape[1]
        keep = torch.full_like(scores, float("-inf"))
        for r, row in enumerate(input_ids[:, self.prompt_length:].tolist()):
            ok = self.c.allowed(row)
            keep[r, ok] = scores[r, ok]
        return keep

def _constrained_config(label_ids, eos, pad):
    "Greedy when no two labels share a first token (one choice per later step), else a beam per label: the exact argmax."
    exact_greedy = len({l[0] for l in label_ids if l}) == len(label_ids)
    return GenerationConfig(max_new_tokens=max(map(len, label_ids)) + 1, do_sample=False, pad_token_id=pad, eos_token_id=eos,
                            num_beams=1 if exact_greedy else len(label_ids), length_penalty=0.0, renormalize_logits=True)

LABELS = [[[5, 6], [5, 7, 8], [9], [10, 11]], [[5], [6], [7]], [[5, 6, 7], [8, 9, 10]], [[5], [5, 6], [5, 6, 7]]]

@pytest.mark.parametrize("labels", LABELS)
def test_constrained_decoding_gives_the_argmax_label(tiny, labels):
    prompts = [[20 + i, 30 + 2 * i, 40 + 3 * i, 50] for i in range(10)] + [[60], [61, 62]]
    P = label_probabilities(tiny, CharTok(), prompts, labels, eos=1, constrained=True, batch_size=7)
    assert np.allclose(P.sum(1), 1)
    gen = generate_batch(tiny, CharTok(), prompts, _constrained_config(labels, 1, 0), logits_processor=[_LabelMask(labels, 1)], batch_size=5)
    for g, p in zip(gen, P):
        assert g["ids"][-1] == 1 and g["ids"][:-1] in labels
        assert g["ids"][:-1] == labels[int(p.argmax())]

def test_label_probabilities_match_a_direct_computation(tiny):
    "Batched, padded, cut-logits scoring equals one unpadded forward per (prompt, label)."
    prompts, labels = [[20, 21, 22], [30]], [[5, 6], [7], [8, 9, 10]]
    got = label_probabilities(tiny, CharTok(), prompts, labels, eos=1, batch_size=4)
    for i, p in enumerate(prompts):
        lp = []
        for l in labels:
            seq = p + l + [1]
            with torch.no_grad(): logp = torch.log_softmax(tiny(torch.tensor([seq])).logits[0].float(), -1)
            lp.append(sum(logp[len(p) - 1 + m, t].item() for m, t in enumerate(l + [1])))
        want = np.exp(np.array(lp) - max(lp)); want /= want.sum()
        assert got[i] == pytest.approx(want, rel=1e-4)

def test_label_constraint_masks_everything_else():
    c = _LabelMask([[5, 6], [9]], eos=2, prompt_length=2)
    out = c(torch.tensor([[3, 3, 5], [3, 3, 9], [3, 3, 4]]), torch.randn(3, 12))
    assert [torch.isfinite(r).nonzero().ravel().tolist() for r in out] == [[6], [2], [2]]

def test_label_token_ids_spacing(embedded_dir):
    tok = AutoTokenizer.from_pretrained(embedded_dir)
    after_colon = label_token_ids(tok, ["positive"], tok("Answer:")["input_ids"])
    after_newline = label_token_ids(tok, ["positive"], tok("Answer:\n")["input_ids"])
    assert after_colon == [tok(" positive", add_special_tokens=False)["input_ids"]]
    assert after_newline == [tok("positive", add_special_tokens=False)["input_ids"]]

@pytest.mark.parametrize("template,chat", [("Review: {review}\nLabel:", False), ("Review: {review}\nLabel:\n", False),
                                           ("Review: {review}", True)])
def test_training_answers_are_the_scored_label_tokens(embedded_dir, template, chat):
    "The ids a label is trained on are the ids it is scored and decoded with, whatever the prompt ends in."
    from llmnb.tokens import Limits, tokenize_rows
    tok = AutoTokenizer.from_pretrained(embedded_dir)
    cfg = load_config(cat_config(embedded_dir, prompt=dict(template=template, chat_template=chat)))
    rows = tokenize_rows([template.format(review=r) for r in REVIEWS10.review], REVIEWS10.output.tolist(), tok, cfg, Limits())
    for ids, n, label in zip(rows["input_ids"], rows["n_prompt"], REVIEWS10.output):
        assert ids[n:-1] == label_token_ids(tok, [label], ids[:n])[0]
        assert ids[-1] == tok.eos_token_id and tok.decode(ids[n:-1]).strip() == label

# ------------------------------------------------------------------ the API on the tiny model with the real tokenizer
REVIEWS10 = pd.DataFrame(dict(
    review=["I loved this film, a joy from start to end.", "Terrible plot and wooden acting.", "Best purchase I have made all year.",
            "It broke after two days. Awful.", "Wonderful service and friendly staff.", "I want my money back, it is useless.",
            "A delightful little book.", "Boring, slow and far too long.", "Great value, works perfectly.", "The worst meal I have ever had."],
    output=["positive", "negative"] * 5))

def cat_config(base, vocab=True, **kw):
    "A category config on `base`; `prompt=` replaces the default task prompt."
    pp = dict(fallback_label="neutral", **(dict(vocab=["positive", "negative"]) if vocab else {}))
    return dict(base_model=str(base), input_features=[dict(name="review", type="text")],
                output_features=[dict(name="output", type="category", preprocessing=pp, **kw.pop("out", {}))],
                prompt=kw.pop("prompt", dict(task="Is the sentiment of this review positive, negative or neutral? Answer with one word.")), **kw)

def test_predict_without_train_uses_config_vocab(tiny_model_dir):
    df = LLM(cat_config(tiny_model_dir, generation=dict(max_new_tokens=3))).predict(REVIEWS10.head(3))
    assert set(df.output_predictions) <= {"positive", "negative", "neutral"}
    cols = [f"output_probabilities_{v}" for v in ("positive", "negative", "neutral")]
    assert np.allclose(df[cols].sum(1), 1)
    assert df.output_probability.tolist() == [df[f"output_probabilities_{l}"].iloc[i] for i, l in enumerate(df.output_predictions)]

def test_no_vocab_needs_train_then_works(tiny_model_dir, tmp_path):
    llm = LLM(cat_config(tiny_model_dir, vocab=False, generation=dict(max_new_tokens=3)))
    with pytest.raises(DataError, match="set preprocessing.vocab, or train"):
        llm.predict(REVIEWS10.head(2))
    stats = llm.train(REVIEWS10, output_directory=tmp_path/"run", progress=False)
    assert llm.vocab == ["positive", "negative", "neutral"]
    df = llm.predict(REVIEWS10.head(2))
    assert {"output_probabilities_positive", "output_probabilities_neutral"} <= set(df.columns)
    assert all(0 <= v["accuracy"] <= 1 and v["loss"] >= 0 for k, v in stats.items() if k in ("validation", "test"))

def test_constrained_predictions_agree_with_probabilities(tiny_model_dir):
    llm = LLM(cat_config(tiny_model_dir, out=dict(decoder=dict(constrain_to_vocabulary=True)), generation=dict(max_new_tokens=6)))
    df = llm.predict(REVIEWS10)
    probs = df[[f"output_probabilities_{v}" for v in ("positive", "negative", "neutral")]].to_numpy()
    assert df.output_response.tolist() == df.output_predictions.tolist()          # the answer is a label
    assert df.output_predictions.tolist() == [["positive", "negative", "neutral"][i] for i in probs.argmax(1)]
    assert np.allclose(df.output_probability, probs.max(1))

def test_finetune_on_category_labels(tiny_model_dir, tmp_path):
    "Fine-tuning trains on the label text: the true label's probability rises, predictions stay in the vocabulary."
    cfg = cat_config(tiny_model_dir, out=dict(decoder=dict(constrain_to_vocabulary=True)), generation=dict(max_new_tokens=4),
                     trainer=dict(type="finetune", epochs=6, batch_size=5, learning_rate=3e-3), preprocessing=dict(split=dict(type="fixed")))
    data = REVIEWS10.assign(split=0)
    before = LLM(cfg).predict(data)
    llm = LLM(cfg)
    llm.train(data, output_directory=tmp_path/"run", progress=False)
    after = llm.predict(data)
    p = lambda df: np.mean([df[f"output_probabilities_{t}"].iloc[i] for i, t in enumerate(data.output)])
    assert p(after) > p(before) + 0.05, (p(before), p(after))
    assert set(after.output_predictions) <= {"positive", "negative", "neutral"}

# ------------------------------------------------------------------ the real model (pytest --slow)
@pytest.mark.slow
def test_a25_zero_shot_reviews_real_model(tmp_path):
    "A25: fallback neutral, three match rule types, task prompt, trainer none, num_beams 4, max_new_tokens 5."
    cfg = dict(base_model="smollm2-135m-instruct", input_features=[dict(name="review", type="text")],
               output_features=[dict(name="output", type="category", preprocessing=dict(fallback_label="neutral"),
                                     decoder=dict(match=dict(positive=dict(type="contains", value="positive"),
                                                             neutral=dict(type="regex", value=r"\bneutral\b"),
                                                             negative=dict(type="contains", value="negative"))))],
               prompt=dict(task="Is the sentiment of this review positive, negative or neutral? Answer with one word.", chat_template=True),
               generation=dict(num_beams=4, max_new_tokens=5))
    llm = LLM(cfg)
    stats = llm.train(REVIEWS10, output_directory=tmp_path/"run", progress=False)   # trainer none: evaluation only
    assert "steps_done" not in stats
    new = pd.DataFrame(dict(review=["Absolutely fantastic, I adore it.", "Dreadful. Never again.", "It arrived on Tuesday."]))
    df = llm.predict(new)
    assert set(df.output_predictions) <= {"positive", "negative", "neutral"}
    assert {"output_probabilities", "output_probability", "output_probabilities_positive", "output_probabilities_negative",
            "output_probabilities_neutral"} <= set(df.columns)
    # and without train(), straight from the config's vocab
    cfg["output_features"][0]["preprocessing"]["vocab"] = ["positive", "negative", "neutral"]
    df2 = LLM(cfg).predict(new)
    assert df2.output_predictions.tolist() == df.output_predictions.tolist()

@pytest.mark.slow
def test_constraint_on_real_model():
    cfg = cat_config("smollm2-135m-instruct", out=dict(decoder=dict(constrain_to_vocabulary=True)))
    cfg["prompt"]["chat_template"] = True
    df = LLM(cfg).predict(REVIEWS10)
    probs = df[[f"output_probabilities_{v}" for v in ("positive", "negative", "neutral")]].to_numpy()
    assert df.output_response.tolist() == df.output_predictions.tolist()
    assert df.output_predictions.tolist() == [["positive", "negative", "neutral"][i] for i in probs.argmax(1)]

# ------------------------------------------------------------------ issue 13: answers no rule matches, calibration, the examples' vote
def test_unmatched_answer_gets_the_best_label_and_is_counted(tiny_model_dir):
    "The random model writes no label: by default each row gets its best-scoring label (not the fallback), and evaluate says how many fell back."
    data = REVIEWS10.head(6)
    m, df = LLM(cat_config(tiny_model_dir, generation=dict(max_new_tokens=3))).evaluate(data)
    vocab = ["positive", "negative", "neutral"]
    P = df[[f"output_probabilities_{v}" for v in vocab]].to_numpy()
    assert not any(l in t for t in df.output_response for l in vocab)            # nothing matched ...
    assert df.output_predictions.tolist() == [vocab[j] for j in P.argmax(1)]    # ... so the best label
    assert m["fallback_rate"] == 1.0
    m, df = LLM(cat_config(tiny_model_dir, out=dict(decoder=dict(no_match="fallback_label")), generation=dict(max_new_tokens=3))).evaluate(data)
    assert set(df.output_predictions) == {"neutral"} and m["fallback_rate"] == 1.0   # Ludwig's behaviour, when asked for
    m, _ = LLM(cat_config(tiny_model_dir, out=dict(decoder=dict(constrain_to_vocabulary=True)))).evaluate(data)
    assert m["fallback_rate"] == 0.0

def test_ludwig_defaults_give_ludwig_fallback():
    cfg = load_config(cat_config("x"), ludwig_defaults=True).output_feature.decoder
    assert (cfg.no_match, cfg.label_calibration) == ("fallback_label", "none")
    cfg = load_config(cat_config("x", out=dict(decoder=dict(no_match="best_label"))), ludwig_defaults=True).output_feature.decoder
    assert cfg.no_match == "best_label"   # a key the config sets wins

def test_contextual_calibration_divides_out_one_prior(tiny_model_dir):
    "Calibrated and raw probabilities differ by one per-label factor shared by every row (the content-free prompt's)."
    vocab = ["positive", "negative", "neutral"]
    probs = lambda cal: LLM(cat_config(tiny_model_dir, out=dict(decoder=dict(constrain_to_vocabulary=True, label_calibration=cal)))
                            ).predict(REVIEWS10)[[f"output_probabilities_{v}" for v in vocab]].to_numpy()
    raw, cal = probs("none"), probs("contextual")
    assert not np.allclose(raw, cal, atol=1e-4)
    ratio = raw / cal; ratio /= ratio.sum(1, keepdims=True)
    assert np.allclose(ratio, ratio[0], atol=1e-5)
    assert np.allclose(probs("auto"), cal)   # auto: contextual when nothing was fine-tuned

def test_neighbour_vote_column_and_fallback(tiny_model_dir, tmp_path):
    "Few-shot: each row's examples' majority label is reported, and `no_match: neighbour_vote` uses it; a row never votes for itself."
    from collections import Counter
    prompt = dict(template="Examples:\n{__context__}\n\nReview: {review}\nSentiment:", retrieval=dict(type="random", k=3))
    llm = LLM(cat_config(tiny_model_dir, prompt=prompt, out=dict(decoder=dict(no_match="neighbour_vote")), generation=dict(max_new_tokens=2)))
    llm.train(REVIEWS10, output_directory=tmp_path/"run", progress=False)
    df = llm.predict(REVIEWS10)
    assert df.output_predictions.tolist() == df.output_neighbour_vote.tolist()
    from llmnb.retrieval import add_context, NEIGHBOURS
    from datasets import Dataset
    ds = add_context(Dataset.from_pandas(REVIEWS10), llm.config, index=llm.retrieval_index)
    assert "Sentiment: positive" in ds["__context__"][0] or "Sentiment: negative" in ds["__context__"][0]   # examples in the query's format
    for n, v in zip(ds[NEIGHBOURS], df.output_neighbour_vote):
        top = max(Counter(n).values()); assert Counter(n)[v] == top
