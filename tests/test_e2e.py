"End to end: fine-tune, save, load in a fresh process, predict; plain PEFT/transformers loads; bad input; DDP; resume."
import json, os, subprocess, sys, textwrap
from pathlib import Path
import pandas as pd
import pytest
import torch
from llmnb.api import LLM
from llmnb.config import ConfigError
from llmnb.data import DataError

ROWS = pd.DataFrame(dict(question=[f"What is {i} plus {i}?" for i in range(24)], answer=[str(2 * i) for i in range(24)]))

def config(base, **trainer):
    return dict(base_model=str(base), input_features=[dict(name="question", type="text")],
                output_features=[dict(name="answer", type="text")],
                prompt=dict(template="Q: {question}\nA:"), adapter=dict(type="lora", r=4, dropout=0.0),
                trainer=dict(type="finetune", epochs=1, batch_size=4, learning_rate=1e-3, **trainer),
                generation=dict(max_new_tokens=4))

def run_py(code, **env):
    "Run `code` in a fresh Python process; return its stdout (fails the test on a non-zero exit)."
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env={**os.environ, **env}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout

# ---------------------------------------------------------------- tiny model: fast
def test_train_save_load_predict_tiny(tiny_model_dir, tmp_path):
    llm = LLM(config(tiny_model_dir, train_steps=3))
    stats = llm.train(ROWS, output_directory=tmp_path/"run", progress=False)
    assert stats["steps_done"] == 3 and stats["supervised_tokens"] > 0
    run = tmp_path/"run"
    assert {"config.yaml", "training_statistics.json", "model"} <= {p.name for p in run.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "llmnb.json", "tokenizer.json"} <= {p.name for p in (run/"model").iterdir()}
    before = llm.predict(ROWS.head(3))
    out = run_py(f"""
        from llmnb.api import LLM
        import pandas as pd
        llm = LLM.load({str(run)!r})
        df = llm.predict(pd.DataFrame(dict(question=["What is 0 plus 0?", "What is 1 plus 1?", "What is 2 plus 2?"])))
        print(df.answer_predictions.tolist())""")
    assert out.strip() == str(before.answer_predictions.tolist())

def test_predict_without_train(tiny_model_dir):
    df = LLM(config(tiny_model_dir)).predict(ROWS.head(2))
    assert list(df.columns[:1]) == ["answer_predictions"] and len(df) == 2

def test_predict_in_chunks_streams_to_disk(tiny_model_dir, tmp_path):
    "Chunked prediction gives the same frame as one pass, in input order, and the CSV holds every row once."
    llm = LLM(config(tiny_model_dir))
    whole = llm.predict(ROWS.head(10))
    chunked = llm.predict(ROWS.head(10), output_directory=tmp_path, chunk_rows=3)
    pd.testing.assert_frame_equal(chunked[["answer_predictions", "answer_num_tokens"]], whole[["answer_predictions", "answer_num_tokens"]])
    on_disk = pd.read_csv(tmp_path/"predictions.csv", keep_default_na=False)
    assert len(on_disk) == 10 and on_disk.answer_num_tokens.tolist() == whole.answer_num_tokens.tolist()
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]   # no .tmp left behind

def test_plain_peft_load_without_llmnb(tiny_model_dir, tmp_path):
    llm = LLM(config(tiny_model_dir, train_steps=2))
    llm.train(ROWS, output_directory=tmp_path/"run", progress=False)
    ids = [[1, 2, 3, 4]]
    with torch.no_grad(): want = llm.model(torch.tensor(ids)).logits[0, -1].tolist()
    out = run_py(f"""
        import sys; sys.modules['llmnb'] = None  # llmnb must not be needed
        import torch, json
        from transformers import AutoModelForCausalLM
        from peft import PeftModel
        base = AutoModelForCausalLM.from_pretrained({str(tiny_model_dir)!r})
        m = PeftModel.from_pretrained(base, {str(tmp_path/'run'/'model')!r}).eval()
        with torch.no_grad(): print(json.dumps(m(torch.tensor({ids})).logits[0, -1].tolist()))""")
    got = json.loads(out)
    assert max(abs(a - b) for a, b in zip(got, want)) < 1e-4

def test_full_finetune_loads_with_plain_transformers(tiny_model_dir, tmp_path):
    cfg = config(tiny_model_dir, train_steps=2); cfg["adapter"] = None
    llm = LLM(cfg)
    llm.train(ROWS, output_directory=tmp_path/"run", progress=False)
    assert (tmp_path/"run"/"model"/"model.safetensors").exists()
    run_py(f"""
        import sys; sys.modules['llmnb'] = None
        from transformers import AutoModelForCausalLM, AutoTokenizer
        AutoModelForCausalLM.from_pretrained({str(tmp_path/'run'/'model')!r}); AutoTokenizer.from_pretrained({str(tmp_path/'run'/'model')!r})""")

# ---------------------------------------------------------------- bad input: one clear line, nothing written
@pytest.mark.parametrize("data, msg", [
    (pd.DataFrame(dict(question=[], answer=[])), "no rows"),
    (pd.DataFrame(dict(q=["x"] * 5, answer=["y"] * 5)), "question"),
    (pd.DataFrame(dict(question=["x"] * 5, answer=[None] * 5)), "no values"),
    (pd.DataFrame(dict(question=["x"] * 5, label=["y"] * 5)), "answer"),
])
def test_bad_data(tiny_model_dir, tmp_path, data, msg):
    with pytest.raises(DataError, match=msg): LLM(config(tiny_model_dir)).train(data, output_directory=tmp_path/"run", progress=False)
    assert not any((tmp_path/"run").glob("*"))

def test_unwritable_output_directory(tiny_model_dir, tmp_path):
    ro = tmp_path/"ro"; ro.mkdir(); ro.chmod(0o500)
    if os.access(ro, os.W_OK): pytest.skip("running as a user who can write anywhere")
    with pytest.raises(DataError, match="cannot write"): LLM(config(tiny_model_dir)).train(ROWS, output_directory=ro/"run", progress=False)

def test_unwritable_output_directory_file(tiny_model_dir, tmp_path):
    f = tmp_path/"file"; f.write_text("x")
    from llmnb.run import RunFolderError   # the run module owns writes into a run folder, and their errors
    with pytest.raises(RunFolderError, match="cannot write"): LLM(config(tiny_model_dir)).train(ROWS, output_directory=f/"run", progress=False)

def test_missing_base_model(tmp_path):
    with pytest.raises(ConfigError, match="base_model"): LLM(config(tmp_path/"no-such-model"))

def test_cli_errors_are_one_line(tiny_model_dir, tmp_path):
    cfg = tmp_path/"c.yaml"; cfg.write_text(json.dumps(config(tiny_model_dir)))
    data = tmp_path/"d.csv"; ROWS.rename(columns=dict(answer="label")).to_csv(data, index=False)
    r = subprocess.run([sys.executable, "-c", "from llmnb.cli import main; main()", "train", "-c", str(cfg), "--dataset", str(data), "-od", str(tmp_path/"run")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "answer" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2, r.stderr

# ---------------------------------------------------------------- resume and DDP
def test_resume_matches_uninterrupted(tiny_model_dir, tmp_path, monkeypatch):
    import llmnb.train as T
    cfg = config(tiny_model_dir, train_steps=6, steps_per_checkpoint=2)
    full = LLM(cfg); full.train(ROWS, output_directory=tmp_path/"a", progress=False)
    orig = T.train_step
    def crash(r, group):
        if r.state["step"] == 3: raise KeyboardInterrupt("simulated crash")
        return orig(r, group)
    monkeypatch.setattr(T, "train_step", crash)
    with pytest.raises(KeyboardInterrupt): LLM(cfg).train(ROWS, output_directory=tmp_path/"b", progress=False)
    monkeypatch.setattr(T, "train_step", orig)
    assert [p.name for p in T.checkpoints(tmp_path/"b")][-1] == "step-2"
    resumed = LLM(cfg); stats = resumed.train(ROWS, output_directory=tmp_path/"b", resume=True, progress=False)
    assert stats["steps_done"] == 6
    a, b = T.trainable_state(full.model), T.trainable_state(resumed.model)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5

DDP_SCRIPT = """
import sys, json, torch, pandas as pd
sys.path.insert(0, {tests!r})
from test_e2e import ROWS, config
from llmnb.api import LLM
import llmnb.train as T
seen, share = [], T._my_share
def recording(r, packs):
    mine, weight = share(r, packs)
    if weight: seen.extend(r.rows[i]["input_ids"] for b in mine for i in b)   # a stand-in batch (weight 0) trains nothing
    return mine, weight
T._my_share = recording
llm = LLM(config({base!r}, train_steps=3, use_mixed_precision=False))
stats = llm.train(ROWS, output_directory={out!r}, progress=False)
import torch.distributed as dist
w = {{k: v.tolist() for k, v in T.trainable_state(llm.model).items()}}
print(json.dumps(dict(rank=dist.get_rank(), world=dist.get_world_size(), processes=stats["processes"], seen=seen,
                      weights=w, loss=stats["train"]["loss"], steps=stats["steps_done"])))
"""

def test_ddp_two_cpu_processes(tiny_model_dir, tmp_path):
    "DDP on 2 CPU processes (gloo) under plain torchrun: the ranks split each step's rows, and the result equals one process accumulating the same batches."
    import llmnb.train as T
    script = tmp_path/"ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent), base=str(tiny_model_dir), out=str(tmp_path/"run")))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517", str(script)],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    res = sorted((json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")), key=lambda x: x["rank"])
    assert [x["rank"] for x in res] == [0, 1] and all(x["world"] == 2 and x["processes"] == 2 for x in res)
    a, b = ({tuple(i) for i in x["seen"]} for x in res)
    assert a and b and not (a & b)   # each rank trained on its own rows
    assert res[0]["weights"] == res[1]["weights"]   # DDP kept the replicas identical
    one = LLM(config(tiny_model_dir, train_steps=3, use_mixed_precision=False, gradient_accumulation_steps=2))
    stats = one.train(ROWS, output_directory=tmp_path/"one", progress=False)
    mine = T.trainable_state(one.model)
    assert max((mine[k] - torch.tensor(v)).abs().max().item() for k, v in res[0]["weights"].items()) < 1e-5
    assert stats["train"]["loss"] == pytest.approx(res[0]["loss"], abs=1e-5)
    assert (tmp_path/"run"/"model"/"adapter_model.safetensors").exists() and (tmp_path/"run"/"checkpoints"/"step-3").is_dir()

# ---------------------------------------------------------------- the real embedded model
@pytest.mark.slow
def test_real_model_finetune_save_load_predict(embedded_dir, tmp_path):
    cfg = config("smollm2-135m-instruct", train_steps=4)
    llm = LLM(cfg)
    stats = llm.train(ROWS, output_directory=tmp_path/"run", progress=False)
    assert stats["steps_done"] == 4
    want = llm.predict(ROWS.head(2)).answer_predictions.tolist()
    out = run_py(f"""
        from llmnb.api import LLM
        import pandas as pd
        llm = LLM.load({str(tmp_path/'run')!r})
        print(llm.predict(pd.DataFrame(dict(question={ROWS.question.head(2).tolist()!r}))).answer_predictions.tolist())""")
    assert out.strip() == str(want)
    run_py(f"""
        import sys; sys.modules['llmnb'] = None
        from transformers import AutoModelForCausalLM
        from peft import PeftModel
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({str(embedded_dir)!r}), {str(tmp_path/'run'/'model')!r})""")

# ---------------------------------------------------------------- FSDP2 on 2 CPU processes
FSDP_SCRIPT = """
import sys, os, json, torch
sys.path.insert(0, {tests!r})
from test_e2e import ROWS, config
from llmnb.api import LLM
import llmnb.train as T
seen, step = [], T.train_step
def recording(r, group):   # what the model is while it trains: FSDP2 shards (DTensors), not DDP replicas
    p = next(p for p in r.model.parameters() if p.requires_grad)
    seen.append([str(r.acc.distributed_type), type(p).__name__, r.acc.is_fsdp2])
    return step(r, group)
T.train_step = recording
cfg = config({base!r}, train_steps=3, use_mixed_precision=False)
if {backend!r}: cfg["backend"] = dict(type="local", trainer=dict(strategy="fsdp"))
llm = LLM(cfg)
stats = llm.train(ROWS, output_directory={out!r}, progress=False)
import torch.distributed as dist
w = {{k: v.tolist() for k, v in T.trainable_state(llm.model).items()}}
print(json.dumps(dict(rank=dist.get_rank(), world=dist.get_world_size(), processes=stats["processes"], seen=seen,
                      weights=w, loss=stats["train"]["loss"], steps=stats["steps_done"])))
"""

FSDP_ACCELERATE_CONFIG = """compute_environment: LOCAL_MACHINE
distributed_type: FSDP
num_processes: 2
num_machines: 1
main_process_port: {port}
use_cpu: true
mixed_precision: 'no'
fsdp_config:
  fsdp_version: 2
"""

@pytest.mark.parametrize("how", ["backend", "accelerate_config"])
def test_fsdp2_two_cpu_processes(how, tiny_model_dir, tmp_path):
    """FSDP2 (`fully_shard`, gloo) on 2 CPU processes, chosen by `backend.trainer.strategy: fsdp` under torchrun or by
    an accelerate config file: the weights are sharded while training, the result matches one process accumulating the
    same batches (weights within 1e-5, loss within 1e-5), and rank 0 writes one run directory that plain PEFT reads."""
    import llmnb.train as T
    from safetensors.torch import load_file
    script, run = tmp_path/"fsdp.py", tmp_path/"run"
    script.write_text(FSDP_SCRIPT.format(tests=str(Path(__file__).parent), base=str(tiny_model_dir), out=str(run),
                                         backend=how == "backend"))
    if how == "backend": cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29519"]
    else:
        (tmp_path/"fsdp.yaml").write_text(FSDP_ACCELERATE_CONFIG.format(port=29521))
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(tmp_path/"fsdp.yaml")]
    r = subprocess.run(cmd + [str(script)], capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    res = sorted((json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")), key=lambda x: x["rank"])
    assert [x["rank"] for x in res] == [0, 1] and all(x["world"] == 2 and x["processes"] == 2 for x in res)
    assert all(s == ["DistributedType.FSDP", "DTensor", True] for x in res for s in x["seen"]) and len(res[0]["seen"]) == 3
    assert res[0]["weights"] == res[1]["weights"]
    one = LLM(config(tiny_model_dir, train_steps=3, use_mixed_precision=False, gradient_accumulation_steps=2))
    stats = one.train(ROWS, output_directory=tmp_path/"one", progress=False)
    mine = T.trainable_state(one.model)
    assert max((mine[k] - torch.tensor(v)).abs().max().item() for k, v in res[0]["weights"].items()) < 1e-5
    assert stats["train"]["loss"] == pytest.approx(res[0]["loss"], abs=1e-5)
    saved = load_file(str(run/"model"/"adapter_model.safetensors"))   # written by rank 0 from the gathered weights
    ref = load_file(str(tmp_path/"one"/"model"/"adapter_model.safetensors"))
    assert saved.keys() == ref.keys() and max((saved[k] - ref[k]).abs().max().item() for k in ref) < 1e-5
    assert (run/"checkpoints"/"step-3"/"adapter_model.safetensors").exists()

# ---------------------------------------------------------------- Ray Train: backend {type: ray}
RAY_SCRIPT = """
import sys, json
sys.path.insert(0, {tests!r})
from test_e2e import ROWS, config
from llmnb.api import LLM
import llmnb.train as T
cfg = config({base!r}, train_steps=3, use_mixed_precision=False)
cfg["backend"] = dict(type="ray", trainer=dict(num_workers=2))
llm = LLM(cfg)
stats = llm.train(ROWS, output_directory={out!r}, progress=False)
w = {{k: v.tolist() for k, v in T.trainable_state(llm.model).items()}}
print("RESULT", json.dumps(dict(workers=stats["ray_workers"], processes=stats["processes"], loss=stats["train"]["loss"],
                                steps=stats["steps_done"], weights=w)))
"""

def _start_ray():
    "A local Ray node of 2 CPUs for the test, or a skip saying why there is none."
    ray = pytest.importorskip("ray", reason="backend: ray needs the extra: pip install 'llmnb[ray]'")
    pytest.importorskip("ray.train.torch", reason="backend: ray needs the extra: pip install 'llmnb[ray]'")
    try: return ray.init(num_cpus=2, include_dashboard=False)
    except Exception as e: pytest.skip(f"Ray could not start a local node here ({e}); on a loaded machine its agents "
                                       "miss the raylet's 30 s start-up deadline")

def test_ray_two_cpu_workers(tiny_model_dir, tmp_path):
    "`backend: {type: ray}`: the same `fit` in 2 Ray Train workers: Ray's and torch's world size is 2 (reported by the\n    workers) and the weights equal one process with twice the accumulation, so both ranks trained and averaged."
    import llmnb.train as T
    ctx = _start_ray()
    script = tmp_path/"ray_run.py"
    script.write_text(RAY_SCRIPT.format(tests=str(Path(__file__).parent), base=str(tiny_model_dir), out=str(tmp_path/"run")))
    try:
        r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600,
                           env={**os.environ, "OMP_NUM_THREADS": "1", "RAY_ADDRESS": ctx.address_info["address"]})
    finally:
        import ray; ray.shutdown()
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    res = json.loads(next(l for l in r.stdout.splitlines() if l.startswith("RESULT ")).split(" ", 1)[1])
    assert res["workers"] == 2 and res["processes"] == 2 and res["steps"] == 3
    one = LLM(config(tiny_model_dir, train_steps=3, use_mixed_precision=False, gradient_accumulation_steps=2))
    one.train(ROWS, output_directory=tmp_path/"one", progress=False)
    mine = T.trainable_state(one.model)
    assert max((mine[k] - torch.tensor(v)).abs().max().item() for k, v in res["weights"].items()) < 1e-5
    assert (tmp_path/"run"/"model"/"adapter_model.safetensors").exists() and not (tmp_path/"run"/".ray").exists()

def test_ray_backend_without_ray_names_the_extra(tiny_model_dir, tmp_path, monkeypatch):
    import builtins
    real = builtins.__import__
    def no_ray(name, *a, **k):
        if name == "ray" or name.startswith("ray."): raise ImportError(f"No module named {name!r}")
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_ray)
    cfg = config(tiny_model_dir, train_steps=1); cfg["backend"] = dict(type="ray")
    from llmnb.errors import LlmnbError
    with pytest.raises(LlmnbError, match=r"backend.type: ray needs Ray Train.*llmnb\[ray\]"):
        LLM(cfg).train(ROWS, output_directory=tmp_path/"run", progress=False)
