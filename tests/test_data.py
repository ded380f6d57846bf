"Dense checks of `llmnb.data`: every source format, exact split counts, missing values, and the errors users meet."
import gzip, json, warnings

import datasets
import numpy as np
import pandas as pd
import pytest
from datasets import Dataset, DatasetDict

from llmnb.config import load_config
from llmnb.data import CONTEXT, PROMPT, SPLIT_NAMES, DataError, LoadReport, load_splits, read_dataset

datasets.disable_progress_bars()


def make_cfg(inp=None, out=None, split=None, **pre):
    "A Ludwig LLM config with input `text`, output `label` (text), overridable per feature and preprocessing."
    d = {"model_type": "llm", "base_model": "hf-internal-testing/tiny-random-GPTJForCausalLM",
         "input_features": [{"name": "text", "type": "text", **(inp or {})}],
         "output_features": [{"name": "label", "type": "text", **(out or {})}]}
    if split or pre: d["preprocessing"] = {**({"split": split} if split else {}), **pre}
    return load_config(d)


ROWS = [{"text": f"row {i}", "label": f"l{i % 3}"} for i in range(20)]


def test_shared_names():
    assert (PROMPT, CONTEXT, SPLIT_NAMES) == ("__prompt__", "__context__", ("train", "validation", "test"))
    assert issubclass(DataError, ValueError)


# ---------------------------------------------------------------- reading

@pytest.fixture
def files(tmp_path):
    ds = Dataset.from_list(ROWS)
    ds.to_csv(tmp_path / "d.csv", index=False)
    ds.to_csv(tmp_path / "d.tsv", sep="\t", index=False)
    ds.to_json(tmp_path / "d.jsonl")
    (tmp_path / "d.json").write_text(json.dumps(ROWS))
    ds.to_parquet(tmp_path / "d.parquet")
    ds.save_to_disk(tmp_path / "saved")
    DatasetDict(train=ds.select(range(15)), valid=ds.select(range(15, 20))).save_to_disk(tmp_path / "saved_dict")
    with gzip.open(tmp_path / "d.csv.gz", "wt") as f: f.write((tmp_path / "d.csv").read_text())
    (tmp_path / "d.data").write_text((tmp_path / "d.csv").read_text())
    return tmp_path


@pytest.mark.parametrize("name", ["d.csv", "d.tsv", "d.jsonl", "d.json", "d.parquet", "saved", "d.csv.gz"])
def test_read_every_file_format(files, name):
    ds = read_dataset(files / name)
    assert isinstance(ds, Dataset)
    assert ds.to_list() == ROWS


def test_read_files_are_memory_mapped(files):
    ds = read_dataset(files / "d.csv")
    assert ds.cache_files and ds.cache_files[0]["filename"].endswith(".arrow")


def test_read_data_format_overrides_extension(files):
    assert read_dataset(files / "d.data", data_format="csv").to_list() == ROWS
    assert read_dataset(str(files / "d.data"), data_format=".CSV").to_list() == ROWS


def test_read_saved_datasetdict(files):
    dd = read_dataset(files / "saved_dict")
    assert isinstance(dd, DatasetDict) and list(dd) == ["train", "valid"]


@pytest.mark.parametrize("make", [pd.DataFrame, list, lambda r: Dataset.from_list(r).to_dict(), Dataset.from_list])
def test_read_in_memory(make):
    assert read_dataset(make(ROWS)).to_list() == ROWS


def test_read_passes_datasets_through():
    ds, dd = Dataset.from_list(ROWS), DatasetDict(train=Dataset.from_list(ROWS))
    assert read_dataset(ds) is ds and read_dataset(dd) is dd


def test_csv_cells_are_text_exactly_as_written(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text('id,country,year,text\n007,NA,1871,"He said ""hi""\nthen left"\n008,None,,Très bien 🎬\n009,null,1990.50,x\n',
                 encoding="utf-8")
    ds = read_dataset(p)
    assert ds["id"][:] == ["007", "008", "009"]
    assert ds["country"][:] == ["NA", "None", "null"]
    assert ds["year"][:] == ["1871", None, "1990.50"]
    assert ds["text"][:] == ['He said "hi"\nthen left', "Très bien 🎬", "x"]


def test_csv_with_bom(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes("\ufefftext,label\na,b\n".encode("utf-8"))
    assert read_dataset(p).column_names == ["text", "label"]


@pytest.mark.parametrize("content,fname,msg", [
    ("", "empty.csv", "empty file"),
    ("", "empty.jsonl", "empty file"),
    ("text,label\n", "header.csv", "has no rows"),
    ("a,a\n1,2\n", "dup.csv", "repeated column names"),
    ("[1, 2", "bad.json", "Could not read"),
    ("x", "d.xlsx", "allowed extensions"),
    ("x", "noext", "allowed extensions"),
])
def test_read_bad_files(tmp_path, content, fname, msg):
    (tmp_path / fname).write_text(content)
    with pytest.raises(DataError, match=msg) as e:
        read_dataset(tmp_path / fname)
    assert fname in str(e.value) or "extension" in str(e.value)


def test_read_missing_path_and_bad_folder(tmp_path):
    with pytest.raises(DataError, match="No file or folder at"): read_dataset(tmp_path / "nope.csv")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="not a dataset saved with `save_to_disk`"): read_dataset(tmp_path / "folder")


def test_read_unknown_data_format(tmp_path):
    (tmp_path / "d.csv").write_text("a\n1\n")
    with pytest.raises(DataError, match="data_format 'excel' is not supported.*allowed: csv"):
        read_dataset(tmp_path / "d.csv", data_format="excel")


@pytest.mark.parametrize("src,msg", [
    ([], "list of rows is empty"), ([1, 2], "one dict per row; found a int"),
    ({"a": [1, 2], "b": [1]}, "Could not build a dataset from the dict"), (3.5, "Cannot read a dataset from a float"),
    (None, "Cannot read a dataset from a NoneType"),
])
def test_read_bad_objects(src, msg):
    with pytest.raises(DataError, match=msg): read_dataset(src)


# ---------------------------------------------------------------- splits

def quiet_load(cfg, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_splits(cfg, *a, **kw)


@pytest.mark.parametrize("n,probs,expected", [
    (10, None, [7, 1, 2]), (100, None, [70, 10, 20]), (1000, [0.8, 0.1, 0.1], [800, 100, 100]),
    (7, [0.5, 0.25, 0.25], [4, 1, 2]), (5, [1.0, 0.0, 0.0], [5, 0, 0]), (3, [0.0, 0.0, 1.0], [0, 0, 3]),
])
def test_random_split_exact_counts(n, probs, expected):
    split = {"type": "random", **({"probabilities": probs} if probs else {})}
    dd, report = quiet_load(make_cfg(split=split), [{"text": f"t{i}", "label": "y"} for i in range(n)])
    assert [len(dd[k]) for k in SPLIT_NAMES] == expected
    assert report.rows == dict(zip(SPLIT_NAMES, expected))
    texts = sum((dd[k]["text"][:] for k in SPLIT_NAMES), [])
    assert sorted(texts) == sorted(f"t{i}" for i in range(n))  # disjoint, and every row is somewhere


def test_random_split_is_seeded_and_keeps_file_order():
    rows = [{"text": f"{i:03d}", "label": "y"} for i in range(100)]
    a, _ = load_splits(make_cfg(), rows, seed=1)
    b, _ = load_splits(make_cfg(), rows, seed=1)
    c, _ = load_splits(make_cfg(), rows, seed=2)
    assert a["train"]["text"][:] == b["train"]["text"][:] != c["train"]["text"][:]
    assert a["train"]["text"][:] == sorted(a["train"]["text"][:])


@pytest.mark.parametrize("values", [[0, 1, 2], ["0", "1", "2"], [0.0, 1.0, 2.0], ["train", "validation", "test"],
                                    ["TRAIN", "val", "Test"], ["training", "dev", "testing"]])
def test_fixed_split_values(values):
    rows = [{"text": f"t{i}", "label": "y", "split": values[s]} for i, s in enumerate([0, 0, 0, 1, 2, 0, 2, 1, 0])]
    dd, report = load_splits(make_cfg(split={"type": "fixed"}), rows)
    assert report.rows == {"train": 5, "validation": 2, "test": 2}
    assert dd["validation"]["text"][:] == ["t3", "t7"]
    assert dd["test"]["text"][:] == ["t4", "t6"]


def test_fixed_split_custom_column_and_bad_values():
    rows = [{"text": "a", "label": "y", "fold": v} for v in ["0", "1", "3", None, "x"]]
    with pytest.raises(DataError, match=r"Split column 'fold'.*3 row\(s\).*'3'.*allowed: 0/1/2"):
        load_splits(make_cfg(split={"type": "fixed", "column": "fold"}), rows)
    with pytest.raises(DataError, match="not in the dataset.*Did you mean 'fold'"):
        load_splits(make_cfg(split={"type": "fixed", "column": "folds"}), rows)


def test_stratified_split_exact_counts_per_class():
    rows = [{"text": f"t{i}", "label": "y", "cls": c} for i, c in enumerate(["a"] * 50 + ["b"] * 30 + ["c"] * 20)]
    dd, report = load_splits(make_cfg(split={"type": "stratify", "column": "cls"}), rows)
    assert report.rows == {"train": 70, "validation": 10, "test": 20}
    for k, exp in zip(SPLIT_NAMES, [(35, 21, 14), (5, 3, 2), (10, 6, 4)]):
        cls = dd[k]["cls"][:]
        assert (cls.count("a"), cls.count("b"), cls.count("c")) == exp


def test_stratify_needs_a_column():
    with pytest.raises(ValueError, match="split.column"):
        load_splits(make_cfg(split={"type": "stratify"}), ROWS)


@pytest.mark.parametrize("pre,total", [({"sample_ratio": 0.5}, 10), ({"sample_size": 7}, 7), ({"sample_size": 500}, 20),
                                       ({"sample_ratio": 0.05}, 1)])
def test_sampling(pre, total):
    dd, report = load_splits(make_cfg(**pre), ROWS)
    assert sum(report.rows.values()) == total


def test_explicit_sets_and_datasetdict_keys():
    tr, va, te = Dataset.from_list(ROWS[:10]), Dataset.from_list(ROWS[10:15]), ROWS[15:]
    dd, report = load_splits(make_cfg(), training_set=tr, validation_set=va, test_set=te)
    assert report.rows == {"train": 10, "validation": 5, "test": 5}
    dd, report = load_splits(make_cfg(), DatasetDict(train=tr, eval=va))
    assert report.rows == {"train": 10, "validation": 5, "test": 0}
    assert dd["test"].column_names == tr.column_names
    dd, report = load_splits(make_cfg(), training_set=tr)
    assert report.rows == {"train": 10, "validation": 0, "test": 0}


def test_saved_datasetdict_folder(files):
    dd, report = load_splits(make_cfg(), str(files / "saved_dict"))
    assert report.rows == {"train": 15, "validation": 5, "test": 0}


@pytest.mark.parametrize("kw,msg", [
    ({}, "No data"), ({"dataset": ROWS, "training_set": ROWS}, "not both"),
    ({"training_set": DatasetDict(train=Dataset.from_list(ROWS))}, "training_set is a DatasetDict"),
    ({"dataset": DatasetDict(train=Dataset.from_list(ROWS), holdout=Dataset.from_list(ROWS))}, "'holdout' is not a known split"),
    ({"dataset": DatasetDict(val=Dataset.from_list(ROWS), validation=Dataset.from_list(ROWS))}, "both mean 'validation'"),
    ({"dataset": {"text": [], "label": []}}, "no rows"),
])
def test_load_splits_bad_sources(kw, msg):
    with pytest.raises(DataError, match=msg): load_splits(make_cfg(), **kw)


# ---------------------------------------------------------------- columns and missing values

def test_missing_output_column_lists_columns_and_suggests():
    with pytest.raises(DataError) as e:
        load_splits(make_cfg(), [{"text": "a", "Label": "x"}])
    msg = str(e.value)
    assert "'label'" in msg and "Columns that exist: 'text', 'Label'" in msg and "Did you mean 'Label'?" in msg


def test_output_column_custom_name():
    cfg = make_cfg(out={"name": "answer", "column": "gold"})
    dd, _ = load_splits(cfg, [{"text": "a", "gold": "x"}] * 10)
    assert dd["train"]["gold"][:] == ["x"] * 7


@pytest.mark.parametrize("empty", [None, "", "  ", float("nan")])
def test_all_empty_output_column(empty):
    with pytest.raises(DataError, match="Output column 'label' has no values: all 4 rows"):
        load_splits(make_cfg(), [{"text": "a", "label": empty}] * 4)


def test_text_output_missing_rows_dropped_with_report_and_one_warning():
    rows = [{"text": f"t{i}", "label": None if i % 4 == 0 else ("" if i % 4 == 1 else "y")} for i in range(40)]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        dd, report = load_splits(make_cfg(), rows)
    assert len(w) == 1 and "Dropped 20 row(s)" in str(w[0].message) and "\n" not in str(w[0].message)
    assert sum(report.rows.values()) == 20 and report.n_dropped == 20
    reason = "missing value in output column 'label' (drop_row)"
    assert sum(report.dropped[reason].values()) == 20
    assert all(v == "y" for k in SPLIT_NAMES for v in dd[k]["label"][:])
    assert "dropped: " + reason in repr(report)


def test_no_warning_when_nothing_dropped():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, report = load_splits(make_cfg(), ROWS)
    assert report.n_dropped == 0 and report.dropped == {}


def test_input_fill_with_const_and_custom_fill_value():
    rows = [{"text": None if i < 5 else f"t{i}", "label": "y"} for i in range(20)]
    dd, report = load_splits(make_cfg(split={"type": "random", "probabilities": [1, 0, 0]}), rows)
    assert dd["train"]["text"][:5] == ["<UNK>"] * 5
    assert report.filled == {"missing value in input column 'text' -> '<UNK>'": {"train": 5}}
    dd, _ = load_splits(make_cfg(inp={"preprocessing": {"fill_value": "?"}}, split={"type": "random", "probabilities": [1, 0, 0]}), rows)
    assert dd["train"]["text"][:5] == ["?"] * 5


def test_input_other_strategies():
    rows = [{"text": t, "label": "y"} for t in [None, "a", "b", None, "b", None]]
    all_train = {"type": "random", "probabilities": [1, 0, 0]}
    get = lambda s: quiet_load(make_cfg(inp={"preprocessing": {"missing_value_strategy": s}}, split=all_train), rows)[0]["train"]["text"][:]
    assert get("drop_row") == ["a", "b", "b"]
    assert get("fill_with_mode") == ["b", "a", "b", "b", "b", "b"]
    assert get("ffill") == ["<UNK>", "a", "b", "b", "b", "b"]
    assert get("bfill") == ["a", "a", "b", "b", "b", "<UNK>"]
    with pytest.raises(ValueError, match="missing_value_strategy.*'guess'.*allowed: 'fill_with_const'"):
        get("guess")


def test_category_output_fallback_label_and_values_become_text():
    cfg = make_cfg(out={"type": "category", "preprocessing": {"fallback_label": "neutral"}},
                   split={"type": "random", "probabilities": [1, 0, 0]})
    rows = [{"text": "a", "label": v} for v in [1, None, 0, None]]
    dd, report = load_splits(cfg, rows)
    assert dd["train"]["label"][:] == ["1", "neutral", "0", "neutral"]
    assert report.n_dropped == 0


def test_input_column_may_be_absent():
    dd, report = load_splits(make_cfg(inp={"name": "question"}), [{"instruction": "x", "label": "y"}] * 10)
    assert dd["train"].column_names == ["instruction", "label"]


def test_csv_end_to_end_keeps_text(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("text,label,split\n" + "".join(f'"line {i}\nnext, ""q""",{i:03d},{i % 3}\n' for i in range(9)) + ",,0\n")
    dd, report = quiet_load(make_cfg(split={"type": "fixed"}), p)
    assert dd["validation"]["label"][:] == ["001", "004", "007"]
    assert dd["train"]["text"][0] == 'line 0\nnext, "q"'
    assert report.rows == {"train": 3, "validation": 3, "test": 3}


def test_batched_on_100k_rows():
    import time
    n = 100_000
    ds = Dataset.from_dict({"text": [None if i % 10 == 0 else "x" for i in range(n)], "label": [None if i % 7 == 0 else "y" for i in range(n)]})
    t0 = time.perf_counter()
    dd, report = quiet_load(make_cfg(), ds)
    print(f"load_splits on {n:,} rows: {time.perf_counter() - t0:.2f}s\n{report}")
    assert report.n_dropped == len(range(0, n, 7))
    assert sum(report.rows.values()) == n - report.n_dropped


def test_report_repr():
    r = LoadReport(rows={"train": 2, "validation": 0, "test": 1})
    r._add("dropped", "why", "train", 3); r._add("dropped", "why", "test", 0)
    assert repr(r) == "rows: train 2, validation 0, test 1\ndropped: why: train 3"
