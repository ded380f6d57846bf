"""Ludwig's CLI: every flag of train/experiment/predict/evaluate/upload/render_config parses with Ludwig's spelling; no
prefix matching; Ludwig's run layout (never overwriting), predictions as parquet + CSV, test_statistics.json."""
import json, os, subprocess, sys
from pathlib import Path
import pandas as pd
import pytest
from llmnb.cli import parser, run_directory

# Ludwig v0.17.8's flags (ludwig/{train,experiment,predict,evaluate,upload}.py, utils/defaults.py), short and long.
TRAIN = ("--output_directory o --experiment_name e --model_name m --dataset d --training_set t --validation_set v "
         "--test_set s --training_set_metadata x --data_format csv -sspi -mlp p -mrp r -sstd -ssts -ssm -ssp -ssl "
         "-rs 1 -g 0 -gml 0.5 -dpt -b local -l debug")
EXPERIMENT = TRAIN + " -es validation -ssuo -kf 3 -skfsi -sstp -sstes"
PREDICT = "--dataset d --data_format csv -s test -m p -gc {max_new_tokens:2} -od o -ssuo -sstp -bs 4 -g 0 -gml 0.5 -dpt -b local -l info"
EVALUATE = "--dataset d --data_format csv -s test -m p -od o -ssuo -sses -scp -scos -bs 4 -g 0 -gml 0.5 -dpt -b local -l info"
UPLOAD = "hf_hub -r a/b -m p -p True -t model -c msg -d desc -l info -df f -dn n"
RENDER = "-c x.yaml -o out.yaml -l info"

@pytest.mark.parametrize("verb,flags", [("train", TRAIN + " -c c.yaml"), ("experiment", EXPERIMENT + " -cs {}"),
                                         ("predict", PREDICT), ("evaluate", EVALUATE), ("upload", UPLOAD),
                                         ("render_config", RENDER)])
def test_every_ludwig_flag_parses(verb, flags):
    a = parser().parse_args([verb, *flags.split()])
    assert a.verb == verb

def test_long_spellings_and_meaning():
    a = parser().parse_args("train --config c.yaml --skip_save_model --gpus 2 --random_seed 7 --logging_level error".split())
    assert (a.skip_save_model, a.gpus, a.random_seed, a.logging_level) == (True, 2, 7, "error")
    assert parser().parse_args("upload -r a/b -m p -p False".split()).private is False
    assert parser().parse_args("upload -r a/b -m p".split()).private is False

@pytest.mark.parametrize("argv", ["predict -m p --dataset d -bs 0", "train -c c --datas d", "train -c c --output_dir o",
                                  "upload -r a/b -m p -p maybe"])
def test_bad_flags_are_rejected(argv, capsys):
    with pytest.raises(SystemExit) as e: parser().parse_args(argv.split())
    assert e.value.code == 2

def test_help_shows_defaults():
    h = parser()._subparsers._group_actions[0].choices["predict"].format_help()
    assert "(default: full)" in h and "(default: results)" in h

def test_run_directory_layout(tmp_path):
    assert run_directory(str(tmp_path/"mine")) == tmp_path/"mine"  # -od alone: exactly that folder
    a = run_directory(str(tmp_path), "exp", None); a.mkdir()
    b = run_directory(str(tmp_path), "exp", None)
    assert (a.name, b.name) == ("exp_run", "exp_run_0")

ROWS = pd.DataFrame(dict(question=[f"What is {i} plus {i}?" for i in range(12)], answer=[str(2 * i) for i in range(12)]))

def _cli(*args, cwd):
    r = subprocess.run([sys.executable, "-c", "from llmnb.cli import main; main()", *map(str, args)], capture_output=True,
                       text=True, cwd=cwd, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r

def test_cli_ludwig_layout_end_to_end(tiny_model_dir, tmp_path):
    cfg = tmp_path/"c.yaml"
    cfg.write_text(json.dumps(dict(base_model=str(tiny_model_dir), input_features=[dict(name="question", type="text")],
                                   output_features=[dict(name="answer", type="text")], prompt=dict(template="Q: {question}\nA:"),
                                   adapter=dict(type="lora", r=4), generation=dict(max_new_tokens=3),
                                   trainer=dict(type="finetune", train_steps=1, batch_size=4))))
    ROWS.to_csv(tmp_path/"d.csv", index=False); ROWS.to_json(tmp_path/"d.data", orient="records", lines=True)
    r = _cli("train", "-c", cfg, "--dataset", "d.csv", "-l", "error", "-sspi", cwd=tmp_path)
    assert "--skip_save_processed_input has no effect" in r.stderr
    _cli("experiment", "-c", cfg, "--dataset", "d.data", "--data_format", "jsonl", "-es", "training", cwd=tmp_path)
    runs = sorted(p.name for p in (tmp_path/"results").iterdir())
    assert runs == ["experiment_run", "experiment_run_0"]
    run = tmp_path/"results"/"experiment_run_0"
    assert (run/"model"/"adapter_config.json").exists()
    stats = json.loads((run/"test_statistics.json").read_text())
    assert set(stats) == {"answer", "combined"}
    assert len(pd.read_parquet(run/"predictions.parquet")) == len(pd.read_csv(run/"predictions.csv")) > 0
    _cli("predict", "-m", run, "--dataset", "d.csv", "-od", "pred", cwd=tmp_path)
    p = pd.read_parquet(tmp_path/"pred"/"predictions.parquet")
    c = pd.read_csv(tmp_path/"pred"/"predictions.csv", keep_default_na=False, dtype=str)
    assert len(p) == 12 and p["answer_predictions"].tolist() == c["answer_predictions"].tolist()
    _cli("evaluate", "-m", run, "--dataset", "d.csv", "-od", "ev", "-scp", cwd=tmp_path)
    assert (tmp_path/"ev"/"test_statistics.json").exists() and not (tmp_path/"ev"/"predictions.csv").exists()
    _cli("render_config", "-c", cfg, "-o", "rendered.yaml", cwd=tmp_path)
    assert "learning_rate" in (tmp_path/"rendered.yaml").read_text()
