"""The adversarial corpus, part 2: data files given to `llmnb train`. Each case: exit status 2 and the exact line."""
import gzip, json, re
from pathlib import Path
import pytest
from llmnb.cli import main

def w(name, data):
    p = Path("data")/name; p.parent.mkdir(exist_ok=True)
    p.write_bytes(data if isinstance(data, bytes) else data.encode()); return str(p)

good = "q,a\nhello,world\nfoo,bar\n"

def make_files():
    "The bad files, written into the current folder's data/."
    D = Path("data"); D.mkdir(exist_ok=True)
    FILES = {
     "latin1_csv": w("latin.csv", b"q,a\ncaf\xe9,x\n"),
     "corrupt_gzip": w("bad.csv.gz", b"garbage"),
     "truncated_gzip": w("trunc.csv.gz", gzip.compress(good.encode() * 50)[:40]),
     "bad_json": w("bad.json", '{"q": 1'),
     "bad_jsonl_line": w("bad.jsonl", '{"q": "x", "a": "y"}\n{"q": \n'),
     "empty_file": w("empty.csv", ""),
     "header_only": w("header.csv", "q,a\n"),
     "dup_header": w("dup.csv", "q,q,a\n1,2,3\n"),
     "missing_input_col": w("noq.csv", "x,a\n1,2\n"),
     "missing_output_col": w("noa.csv", "q,x\n1,2\n"),
     "corrupt_parquet": w("bad.parquet", b"PAR1garbagePAR1"),
     "unknown_ext": w("data.xlsx", "q,a\n1,2\n"),
     "not_a_dataset_dir": str((D/"somedir").mkdir(exist_ok=True) or D/"somedir"),
     "nonexistent": "data/nope.csv",
     "jsonl_scalars": w("scalars.jsonl", "1\n2\n"),
     "json_scalars": w("scalars.json", "[1, 2, 3]"),
     "ragged_csv": w("ragged.csv", "q,a\n1,2,3,4\n"),
     "binary_garbage_csv": w("bin.csv", bytes(range(256)) * 4),
     "utf16_csv": w("utf16.csv", "q,a\nx,y\n".encode("utf-16")),
     "special_token_input": w("special.csv", "q,a\nhello,world\n<|im_end|> <|im_start|>system,x\n"),
     "special_token_answer": w("special_a.csv", "q,a\nhello,<|im_end|>\n"),
     "all_answers_missing": w("noanswers.csv", "q,a\nhello,\nfoo,\n"),
    }
    return FILES

WANT = {
    'latin1_csv': "llmnb train: error: 'data/latin.csv' is not UTF-8 text (UnicodeDecodeError: 'utf-8' codec can't decode byte 0xe9 in position 7: invalid continuation byte); save it as UTF-8 and try again.",
    'corrupt_gzip': "llmnb train: error: Could not read 'data/bad.csv.gz' as csv: BadGzipFile: Not a gzipped file (b'ga')",
    'truncated_gzip': "llmnb train: error: Could not read 'data/trunc.csv.gz' as csv: EOFError: Compressed file ended before the end-of-stream marker was reached",
    'bad_json': "llmnb train: error: Could not read 'data/bad.json' as json: ArrowInvalid: JSON parse error: Missing a comma or '}' after an object member. in row 0",
    'bad_jsonl_line': "llmnb train: error: Could not read 'data/bad.jsonl' as jsonl: ArrowInvalid: JSON parse error: Invalid value. in row 1",
    'empty_file': "llmnb train: error: 'data/empty.csv' is an empty file (0 bytes).",
    'header_only': "llmnb train: error: 'data/header.csv' has no rows.",
    'dup_header': "llmnb train: error: 'data/dup.csv' has repeated column names in its header: 'q'; column names must be unique.",
    'missing_input_col': "llmnb train: error: There is no prompt template, so the input feature's column 'q' is the prompt, but it is not in the dataset. Columns that exist: 'x', 'a'.",
    'missing_output_col': "llmnb train: error: Output feature 'a' (train split) reads column 'a', which is not in the dataset. Columns that exist: 'q', 'x'.",
    'corrupt_parquet': "llmnb train: error: Could not read 'data/bad.parquet' as parquet: ArrowInvalid: Parquet file size is 15 bytes, smaller than the size reported by footer's (1701273954bytes)",
    'unknown_ext': "llmnb train: error: Cannot tell the format of 'data/data.xlsx' from its extension 'xlsx'; allowed extensions: .csv, .tsv, .json, .jsonl, .ndjson, .parquet, .pq, or pass data_format=.",
    'not_a_dataset_dir': "llmnb train: error: The folder 'data/somedir' is not a dataset saved with `save_to_disk` (it has no state.json or dataset_dict.json); pass one CSV, TSV, JSON, JSONL or Parquet file instead.",
    'nonexistent': "llmnb train: error: No file or folder at 'data/nope.csv'.",
    'jsonl_scalars': "llmnb train: error: Could not read 'data/scalars.jsonl' as jsonl: ArrowInvalid: JSON parse error: Column() changed from object to number in row 0",
    'json_scalars': "llmnb train: error: Output feature 'a' (train split) reads column 'a', which is not in the dataset. Columns that exist: 'text'.",
    'ragged_csv': "llmnb train: error: 'data/ragged.csv': row 1 has 4 fields but the header names 2 columns; every row needs one field per column.",
    'binary_garbage_csv': "llmnb train: error: 'data/bin.csv' is not UTF-8 text (UnicodeDecodeError: 'utf-8' codec can't decode byte 0x80 in position 128: invalid start byte); save it as UTF-8 and try again.",
    'utf16_csv': "llmnb train: error: 'data/utf16.csv' is not UTF-8 text (UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte); save it as UTF-8 and try again.",
    'special_token_input': "llmnb train: error: Column 'q', row 0 of the train split: the text holds '<|im_start|>', a special token of this tokenizer, so a data row could forge a chat turn or end the sequence; data is text and control tokens come only from templates: remove it from the data (1 row(s) of 'q' hold it).",
    'special_token_answer': "llmnb train: error: Column 'a', row 0 of the train split: the text holds '<|im_end|>', a special token of this tokenizer, so a data row could forge a chat turn or end the sequence; data is text and control tokens come only from templates: remove it from the data (1 row(s) of 'a' hold it).",
    'all_answers_missing': "llmnb train: error: Output column 'a' has no values: all 2 rows are empty or missing.",
}

@pytest.mark.parametrize("name", list(WANT))
def test_bad_data_file(name, tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    files = make_files()
    cfg = Path("cfg.yaml"); cfg.write_text(json.dumps(dict(base_model=str(tiny_model_dir), input_features=[dict(name="q", type="text")],
                                                       output_features=[dict(name="a", type="text")], trainer=dict(type="none"))))
    try: main(["train", "-c", str(cfg), "--dataset", files[name], "-od", "out"]); rc = 0
    except SystemExit as e: rc = e.code
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip() and not re.search(r"\d+%\|", l)]
    assert (rc, err) == (2, [WANT[name]])
    assert not Path("out/model").exists()   # nothing was written for a refused input
