"""Issue 13: in-context learning (and its speed) on real tabular data that packages ship.

    python bench/realdata.py icl [--datasets penguins,iris,wine]   # the option table (accuracy, macro-F1, fallback share)
    python bench/realdata.py speed                                 # few-shot k=3 vs zero-shot, seconds per row
    python bench/realdata.py ft [--datasets penguins] [--variants 0,1]  # fine-tuning A/B: plain PEFT loop vs llmnb

Every dataset: one fixed stratified split (random_state=0), held-out rows only for scoring, the training rows as the
retrieval pool. The configs are Ludwig-style, as the reference docs teach them: a multi-column `prompt.template` ending
"Answer with one word.", a category output with `contains` rules and a `fallback_label` (the majority class),
`generation.max_new_tokens: 8`, the embedded SmolLM2-135M-Instruct, `trainer: none`. Each prompt setting is generated
once; the decoder options (what a row gets when no rule matches, label calibration, labels only) are then applied to
the same generations through `llmnb.evaluate.predict_categories`, the code `LLM.predict` runs.
"""
import argparse, json, math, os, statistics, sys, time, warnings
from pathlib import Path
import numpy as np, pandas as pd
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")
import datasets, transformers
datasets.disable_progress_bars(); transformers.logging.set_verbosity_error()
from datasets import Dataset
from llmnb.api import LLM
from llmnb.evaluate import predict_categories, category_metrics, neighbour_vote
from llmnb.retrieval import DEFAULT_EXAMPLE_TEMPLATE
import llmnb.evaluate as E

_memo, _label_probabilities = {}, E.label_probabilities
def _cached(model, tok, prompt_ids, label_ids, eos, constrained=False, batch_size=16):
    "The decoder options of one prompt setting score the same prompts: each (prompts, labels) pair is scored once."
    key = (id(model), tuple(map(tuple, prompt_ids)), tuple(map(tuple, label_ids)), eos, constrained)
    if key not in _memo: _memo[key] = _label_probabilities(model, tok, prompt_ids, label_ids, eos, constrained, batch_size)
    return _memo[key]

def penguins():
    from palmerpenguins import load_penguins
    df = load_penguins().drop(columns=["year"])
    row = ("Island: {island}. Bill length: {bill_length_mm} mm. Bill depth: {bill_depth_mm} mm. Flipper length: "
           "{flipper_length_mm} mm. Body mass: {body_mass_g} g. Sex: {sex}.\n"
           "Which penguin species is this: Adelie, Chinstrap or Gentoo? Answer with one word.")
    return df, "species", row, 69

def iris():
    from sklearn.datasets import load_iris
    d = load_iris(as_frame=True); df = d.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    df["species"] = d.target_names[df.pop("target")]
    row = ("Sepal length: {sepal_length} cm. Sepal width: {sepal_width} cm. Petal length: {petal_length} cm. "
           "Petal width: {petal_width} cm.\nWhich iris species is this: setosa, versicolor or virginica? Answer with one word.")
    return df, "species", row, 45

def wine():
    from sklearn.datasets import load_wine
    d = load_wine(as_frame=True); df = d.frame.rename(columns={"od280/od315_of_diluted_wines": "od280"})
    df["cultivar"] = np.array(["Barolo", "Grignolino", "Barbera"])[df.pop("target")]   # UCI: the three cultivars
    row = ("Alcohol: {alcohol}%. Malic acid: {malic_acid}. Flavanoids: {flavanoids}. Colour intensity: {color_intensity}. "
           "Hue: {hue}. Proline: {proline}.\nWhich wine cultivar is this: Barolo, Grignolino or Barbera? Answer with one word.")
    return df, "cultivar", row, 60

DATASETS = dict(penguins=penguins, iris=iris, wine=wine)

def split(name):
    df, label, row, n = DATASETS[name]()
    tr, te = train_test_split(df, test_size=n, stratify=df[label], random_state=0)
    return tr.reset_index(drop=True), te.reset_index(drop=True), label, row

def config(label, row, labels, majority, shots=0, examples="query", chat=False, **decoder):
    "The user's config (Ludwig-style) with one prompt setting; `decoder` sets the llmnb decoder options."
    prompt = dict(template=row, chat_template=chat)
    if shots:
        prompt = dict(prompt, template="Examples:\n{__context__}\n\n" + row, retrieval=dict(type="semantic", k=shots))
        if examples == "input/output": prompt["retrieval"]["example_template"] = DEFAULT_EXAMPLE_TEMPLATE
    return dict(model_type="llm", base_model="smollm2-135m-instruct", input_features=[dict(name="row", type="text")],
                output_features=[dict(name=label, type="category", preprocessing=dict(vocab=labels, fallback_label=majority),
                                      decoder=dict(type="category_extractor", match={l: dict(type="contains", value=l) for l in labels}, **decoder))],
                prompt=prompt, generation=dict(max_new_tokens=8), trainer=dict(type="none"))

DECODERS = {   # name: decoder options; the first is Ludwig's behaviour (ludwig_defaults: true)
    "rules, fallback label (Ludwig)": dict(no_match="fallback_label", label_calibration="none"),
    "rules, else best label (raw)": dict(no_match="best_label", label_calibration="none"),
    "rules, else best label (contextual)": dict(no_match="best_label", label_calibration="contextual"),
    "rules, else best label (pmi)": dict(no_match="best_label", label_calibration="pmi"),
    "labels only (raw)": dict(constrain_to_vocabulary=True, label_calibration="none"),
    "labels only (contextual)": dict(constrain_to_vocabulary=True, label_calibration="contextual"),
    "labels only (pmi)": dict(constrain_to_vocabulary=True, label_calibration="pmi"),
    "rules, else neighbour vote (contextual)": dict(no_match="neighbour_vote", label_calibration="contextual"),
}

SKIP_LABELS_ONLY = False   # --no-labels-only: one scoring pass per setting instead of two

def score(pred, truth, vocab, fell):
    m = category_metrics(pred, truth, vocab, fell_back=fell)
    return dict(accuracy=round(m["accuracy"], 3), macro_f1=round(m["macro_f1"], 3), fallback=round(m["fallback_rate"], 3))

def icl(name, settings):
    tr, te, label, row = split(name)
    labels = sorted(tr[label].unique()); majority = tr[label].value_counts().idxmax()
    truth = te[label].tolist(); out = []
    out.append(dict(dataset=name, prompt="majority class", decoder="-", **score([majority] * len(te), truth, labels, [0] * len(te))))
    for shots, examples, chat in settings:
        if not shots and examples != "query": continue
        llm = LLM(config(label, row, labels, majority, shots, examples, chat))
        if shots: llm._index_only(tr)
        ds = llm._render(Dataset.from_pandas(te))
        t0 = time.perf_counter(); res = llm._generate_rendered(ds); gen_s = time.perf_counter() - t0
        o = llm.config.output_feature
        pname = ("zero-shot" if not shots else f"semantic {shots}-shot, {examples} examples") + (", chat template" if chat else "")
        n_said = sum(any(l.lower() in r["text"].lower() for l in labels) for r in res)
        for dname, opts in DECODERS.items():
            if not shots and "neighbour" in dname or SKIP_LABELS_ONLY and dname.startswith("labels only"): continue
            oo = o.model_copy(update=dict(decoder=o.decoder.model_copy(update=opts)))
            llm.config.output_features[0] = oo
            E.label_probabilities = _cached
            c = predict_categories(llm.model, llm.tokenizer, res, oo, labels, 16, free_ids=llm._content_free_ids())
            out.append(dict(dataset=name, prompt=pname, decoder=dname, **score(c["labels"], truth, labels, c["fell_back"])))
        llm.config.output_features[0] = o; _memo.clear()
        if shots:
            votes = [neighbour_vote(r["neighbours"]) for r in res]
            out.append(dict(dataset=name, prompt=pname, decoder="(the examples' vote alone)", **score(votes, truth, labels, [0] * len(te))))
        print(pd.DataFrame(out).to_string(index=False), flush=True)
        print(f"# {name} / {pname}: generation {gen_s:.1f}s, {n_said}/{len(res)} answers name a label; first answer {res[0]['text']!r}", flush=True)
    return out

def _index_only(self, tr):
    "Build the retrieval index from the training rows (what `train` does for trainer: none), without writing a run."
    from llmnb.retrieval import add_context
    add_context(Dataset.from_pandas(tr.head(1)), self.config, index_split=Dataset.from_pandas(tr), llm=self)
LLM._index_only = _index_only

def speed(name="penguins", repeats=3, rows=None):
    "Seconds per row of `LLM.predict` on the held-out rows, zero-shot against semantic 3-shot, interleaved, median of `repeats`."
    tr, te, label, row = split(name)
    te = te.head(rows) if rows else te
    labels = sorted(tr[label].unique()); majority = tr[label].value_counts().idxmax()
    llms = {"zero-shot": LLM(config(label, row, labels, majority)), "semantic 3-shot": LLM(config(label, row, labels, majority, 3))}
    llms["semantic 3-shot"]._index_only(tr)
    for l in llms.values(): l.predict(te.head(4))   # warm up: load, embedder, first batch
    t = {k: [] for k in llms}
    for _ in range(repeats):
        for k, l in llms.items():
            s = time.perf_counter(); l.predict(te); t[k].append((time.perf_counter() - s) / len(te))
    med = {k: statistics.median(v) for k, v in t.items()}
    print(f"load average {os.getloadavg()[0]:.2f}; per row, median of {repeats}: " + ", ".join(f"{k} {v*1000:.1f} ms" for k, v in med.items())
          + f"; ratio {med['semantic 3-shot'] / med['zero-shot']:.2f}")
    return med

# ---------------------------------------------------------------- fine-tuning A/B (issue 13's first item)
BUDGET = dict(epochs=3, learning_rate=5e-4, batch_size=8)   # the budget

def ft_config(label, row, budget=True, **trainer):
    "The issue's fine-tuning config: a text output, the template, `adapter: lora` (defaults), the budget (or none: defaults)."
    t = dict(type="finetune", **(BUDGET if budget else {}), **trainer)
    return dict(model_type="llm", base_model="smollm2-135m-instruct", input_features=[dict(name="row", type="text")],
                output_features=[dict(name=label, type="text")], prompt=dict(template=row), adapter=dict(type="lora"), trainer=t)

def ft_splits(name):
    "Training rows less a stratified 10% validation split (llmnb keeps its best checkpoint by it), and the held-out rows."
    tr, te, label, row = split(name)
    trn, val = train_test_split(tr, test_size=0.1, stratify=tr[label], random_state=0)
    return trn.reset_index(drop=True), val.reset_index(drop=True), te, label, row

def held_out_accuracy(llm, te, label) -> float:
    "Greedy answers of `llm.model` (as it is now) on the held-out rows; exact match of the stripped answer with the label."
    llm.engine = "transformers"   # one engine for every row of the A/B (the earlier rows were decoded by transformers)
    res = llm._generate_rendered(llm._render(Dataset.from_pandas(te)))
    return round(float(np.mean([r["text"].strip().lower() == str(t).lower() for r, t in zip(res, te[label])])), 3)

def ft_llmnb(name, budget=True, **trainer):
    "llmnb's own loop: held-out accuracy of the weights it keeps and of every evaluation's weights, with the validation metrics."
    import tempfile
    import llmnb.train as T
    trn, val, te, label, row = ft_splits(name)
    llm, snaps, orig = LLM(ft_config(label, row, budget, **trainer)), [], T._after_evaluation
    def spy(r, ev, train_loss):   # a copy of the weights at every evaluation, to score each on the held-out rows
        orig(r, ev, train_loss); snaps.append((r.state["step"], ev.get("validation", {}), T.trainable_state(r.model)))
    T._after_evaluation = spy
    try:
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter(); st = llm.train(training_set=trn, validation_set=val, output_directory=d, progress=False)
            secs = time.perf_counter() - t0
    finally: T._after_evaluation = orig
    out = dict(kept=held_out_accuracy(llm, te, label), kept_step=st["best"]["step"], metric=st["best"]["metric"], train_s=round(secs))
    for step, ev, state in snaps:
        T.load_trainable_state(llm.model, state)
        out[f"step {step}"] = dict(held_out=held_out_accuracy(llm, te, label), **{k: round(v, 3) for k, v in ev.items() if k != "perplexity"})
    return out

def ft_plain(name, epochs=3, lr=5e-4, batch_size=8, seed=42):
    "A plain PEFT loop on the same rows, tokens and LoRA (llmnb attaches it): fp32, constant rate, padded batches, final weights."
    import random, torch
    from llmnb.train import pad_batch, loss_sum
    from llmnb.tokens import tokenize_dataset, sequence_limits
    from transformers import set_seed as _set_seed
    trn, val, te, label, row = ft_splits(name)
    llm = LLM(ft_config(label, row)); llm.load_base()
    rows, _ = tokenize_dataset(llm._render(Dataset.from_pandas(trn)), llm.tokenizer, llm.config, sequence_limits(llm.config, llm.context_length), "__prompt__", label)
    rows = rows.to_list(); _set_seed(seed); llm._prepare_for_finetune(epochs * math.ceil(len(rows) / batch_size))
    from llmnb.api import _longest_target
    llm.longest_target = _longest_target(llm.tokenizer, trn[label])   # generation's length limit, as after llmnb's training
    m = llm.model; m.train(); opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    rng, t0, per_epoch = random.Random(seed), time.perf_counter(), []
    for _ in range(epochs):
        idx = list(range(len(rows))); rng.shuffle(idx)
        for i in range(0, len(idx), batch_size):
            b = {k: v.to(m.device) for k, v in pad_batch([rows[j] for j in idx[i:i + batch_size]], llm.tokenizer.pad_token_id).items()}
            s, n = loss_sum(m, b); (s / n).backward(); opt.step(); opt.zero_grad()
        m.eval(); per_epoch.append(held_out_accuracy(llm, te, label)); m.train()
    return dict(last=per_epoch[-1], per_epoch=per_epoch, train_s=round(time.perf_counter() - t0))

VARIANTS = {   # name: (function, kwargs); one factor at a time against the budget
    "plain PEFT loop (fp32, constant, padded, last weights)": (ft_plain, {}),
    "llmnb, the budget": (ft_llmnb, {}),
    "llmnb, the budget, constant rate, no warm-up": (ft_llmnb, dict(learning_rate_scheduler=dict(decay="constant", warmup_fraction=0.0))),
    "llmnb, the budget, no packing": (ft_llmnb, dict(packing=False)),
    "llmnb defaults (no hyperparameters)": (ft_llmnb, dict(budget=False)),
}

def ft(name, variants):
    out = []
    for v in variants:
        f, kw = VARIANTS[v]
        r = dict(dataset=name, variant=v, **f(name, **kw)); out.append(r)
        print(json.dumps(r), flush=True)
    return out

if __name__ == "__main__":
    ap = argparse.ArgumentParser(); ap.add_argument("what", choices=["icl", "speed", "ft"])
    ap.add_argument("--datasets", default="penguins,iris,wine"); ap.add_argument("--quick", action="store_true", help="the first dataset too only zero-shot and 3-shot (query format); the others always")
    ap.add_argument("--json", default=None)
    ap.add_argument("--settings", default=None, help="e.g. 0:query:chat,3:query:plain (shots:examples:chat|plain); default: all")
    ap.add_argument("--no-labels-only", action="store_true", help="skip the labels-only rows (saves one scoring pass)")
    ap.add_argument("--rows", type=int, default=None, help="speed: the first N held-out rows only")
    ap.add_argument("--variants", default=None, help="ft: indices into VARIANTS, e.g. 0,1")
    a = ap.parse_args()
    SKIP_LABELS_ONLY = a.no_labels_only
    if a.what == "speed": speed(a.datasets.split(",")[0], rows=a.rows); sys.exit()
    if a.what == "ft":
        vs = [list(VARIANTS)[int(i)] for i in a.variants.split(",")] if a.variants else list(VARIANTS)
        rows = [r for d in a.datasets.split(",") for r in ft(d, vs)]
        if a.json: Path(a.json).write_text(json.dumps(rows, indent=1))
        sys.exit()
    settings = [(0, "query", False), (3, "query", False), (3, "input/output", False), (0, "query", True), (3, "query", True)]
    if a.settings: settings = [(int(x.split(":")[0]), x.split(":")[1], x.split(":")[2] == "chat") for x in a.settings.split(",")]
    rows = [r for i, d in enumerate(a.datasets.split(",")) for r in icl(d, settings if i == 0 and not a.quick or a.settings else settings[:2])]
    df = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_rows", 500, "display.max_colwidth", 60): print(df.to_string(index=False))
    if a.json: Path(a.json).write_text(json.dumps(rows, indent=1))
