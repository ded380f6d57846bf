"""Semantic retrieval at scale: embed 100k training rows, build the FAISS index, answer 10k queries.

    python bench/retrieval_scale.py [--rows 100000] [--queries 10000] [--k 3]

Prints the time of each stage. Uses the default embedding model (all-MiniLM-L6-v2, the packaged copy offline).
"""
import argparse, os, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import numpy as np
import faiss, torch
from datasets import Dataset
from llmnb.config import load_config
from llmnb.retrieval import RetrievalIndex, TEXT, _embed, _data_sha1

WORDS = ("the a film movie plot cast actor actress scene story music score ending start director camera light dark funny sad "
         "boring brilliant awful great terrible wonderful slow fast long short moving charming dull clever silly loud quiet "
         "family children night summer city war love friend house road sea dog king queen ghost robot space ship").split()

def sentences(n, rng):
    lens = rng.integers(8, 20, n)
    w = rng.integers(0, len(WORDS), (n, 20))
    return [" ".join(WORDS[j] for j in row[:l]) for row, l in zip(w, lens)]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--random-vectors", action="store_true", help="skip the model: random unit vectors, to time the index alone")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    texts, labels = sentences(a.rows, rng), rng.choice(["positive", "negative"], a.rows).tolist()
    queries = sentences(a.queries, rng)
    cfg = load_config(dict(base_model="smollm2-135m-instruct", input_features=[dict(name="review", type="text")],
                           output_features=[dict(name="label", type="text")],
                           prompt=dict(task="Classify.", retrieval=dict(type="semantic", k=a.k))))
    print(f"{a.rows} rows, {a.queries} queries, k={a.k}; torch threads {torch.get_num_threads()}, faiss threads {faiss.omp_get_max_threads()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    if a.random_vectors: return index_only(a, texts, labels, rng)
    _embed(["warm up"], cfg.prompt.retrieval.model_name)
    t, parts = time.perf_counter(), []
    for i in range(0, a.rows, 10_000):  # as RetrievalIndex.build does (it embeds 8192 at a time), with progress lines
        parts.append(_embed(texts[i:i + 10_000], cfg.prompt.retrieval.model_name))
        print(f"  embedded {i + len(parts[-1])} rows: {time.perf_counter() - t:.0f} s", flush=True)
    vecs, t_embed = np.concatenate(parts), time.perf_counter() - t
    print(f"embed {a.rows} training rows: {t_embed:.1f} s ({a.rows / t_embed:.0f} rows/s)", flush=True)
    t = time.perf_counter(); flat = faiss.IndexFlatIP(vecs.shape[1]); flat.add(vecs); t_add = time.perf_counter() - t
    print(f"build IndexFlatIP: {t_add:.2f} s", flush=True)
    settings = dict(type="semantic", model_name=cfg.prompt.retrieval.model_name, text_columns=["review"], label_column="label",
                    input_feature="review", output_feature="label", rows=a.rows, data_sha1=_data_sha1(texts, labels))
    t = time.perf_counter(); index = RetrievalIndex(Dataset.from_dict({TEXT: texts, "label": labels}), settings, flat); t_rows = time.perf_counter() - t
    print(f"rows table + duplicate groups: {t_rows:.2f} s", flush=True)
    t = time.perf_counter(); qv = _embed(queries, cfg.prompt.retrieval.model_name); t_qembed = time.perf_counter() - t
    t = time.perf_counter(); flat.search(qv, a.k); t_raw = time.perf_counter() - t
    print(f"embed {a.queries} queries: {t_qembed:.1f} s; raw FAISS search: {t_raw:.2f} s", flush=True)
    t = time.perf_counter(); ids = index.search(queries, a.k); t_search = time.perf_counter() - t
    print(f"index.search({a.queries} new queries): {t_search:.1f} s (embedding included)", flush=True)
    t = time.perf_counter(); own = index.search(texts[:a.queries], a.k, exclude=np.arange(a.queries)); t_own = time.perf_counter() - t
    print(f"index.search({a.queries} training rows, self-excluded, stored vectors): {t_own:.2f} s", flush=True)
    t = time.perf_counter(); ctx = index.format_examples(ids); t_fmt = time.perf_counter() - t
    print(f"format_examples: {t_fmt:.2f} s", flush=True)
    assert ids.shape == (a.queries, a.k) and not (own == np.arange(a.queries)[:, None]).any()

def index_only(a, texts, labels, rng):
    "FAISS build and search at full size with random unit vectors (search cost does not depend on the vectors' values)."
    vecs = rng.standard_normal((a.rows, 384), dtype=np.float32); faiss.normalize_L2(vecs)
    qv = rng.standard_normal((a.queries, 384), dtype=np.float32); faiss.normalize_L2(qv)
    t = time.perf_counter(); flat = faiss.IndexFlatIP(384); flat.add(vecs); print(f"build IndexFlatIP: {time.perf_counter() - t:.2f} s", flush=True)
    t = time.perf_counter(); flat.search(qv, a.k); print(f"raw FAISS search, {a.queries} queries: {time.perf_counter() - t:.2f} s", flush=True)
    settings = dict(type="semantic", model_name=None, text_columns=["review"], label_column="label",
                    input_feature="review", output_feature="label", rows=a.rows, data_sha1="")
    t = time.perf_counter(); index = RetrievalIndex(Dataset.from_dict({TEXT: texts, "label": labels}), settings, flat)
    print(f"rows table + duplicate groups: {time.perf_counter() - t:.2f} s", flush=True)
    t = time.perf_counter(); own = index.search(texts[:a.queries], a.k, exclude=np.arange(a.queries))
    print(f"index.search({a.queries} training rows, self-excluded, stored vectors): {time.perf_counter() - t:.2f} s", flush=True)
    t = time.perf_counter(); index.format_examples(own); print(f"format_examples: {time.perf_counter() - t:.2f} s", flush=True)
    assert not (own == np.arange(a.queries)[:, None]).any()

if __name__ == "__main__": main()
