"""GPU benchmark: the CPU benchmark on the GPU, plus a 1B-parameter Llama-shaped model (random weights) in bf16 LoRA and QLoRA.

The 1B runs are: bf16 LoRA, 4-bit QLoRA, and bf16 LoRA under DeepSpeed ZeRO-2 (`backend: {trainer: {strategy:
deepspeed}}`, one process under torchrun; needs `pip install deepspeed`, else its row says so).

    python bench/gpu.py                 # everything: run.py --full on the GPU, then the 1B runs
    python bench/gpu.py --skip-small    # only the 1B runs
    python bench/gpu.py --rows 512 --batch 16x1 --seq-check
    python bench/gpu.py --only-engines  # only prediction engines: vLLM against transformers (llmnb), same prompts

Prediction engines (issue 17): the 256 bench prompts, greedy, `max_new_tokens` 64, the embedded model in bf16:
llmnb's `predict` (transformers, its batching) against vLLM's offline `LLM.generate` (continuous batching, paged
attention) on the same token ids, each in its own process; prompts/s, generated tokens/s and the number of
answers identical to llmnb's. vLLM is not a dependency: `pip install vllm` on the GPU machine first (a row says
so when it is missing).

For the 1B model it reports, per run (each in its own process): supervised and total tokens/s, wall time,
peak GPU memory, and MFU: achieved model FLOP/s over a bf16 matmul rate measured on this GPU at the start.
Model FLOPs per token of LoRA training are counted as 4 x N (forward 2N, backward through the frozen weights 2N;
no weight gradients for frozen weights; attention and the LoRA matrices left out), N = non-embedding parameters
plus the LM head at the answer positions only for llmnb. The random-weight model is built once into a temp folder
with the embedded model's tokenizer; llmnb loads it as any local `base_model` folder.
"""
from __future__ import annotations
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as bench

LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                max_position_embeddings=4096, rope_theta=500000.0, tie_word_embeddings=True)

def matmul_tflops(n=8192, iters=50) -> float:
    "Measured dense bf16 matmul rate of this GPU (TFLOP/s), the denominator of MFU."
    import torch
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16); b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(5): a @ b
    torch.cuda.synchronize(); t0 = time.perf_counter()
    for _ in range(iters): a @ b
    torch.cuda.synchronize()
    return 2 * n ** 3 * iters / (time.perf_counter() - t0) / 1e12

def build_model(dest: Path) -> Path:
    "A Llama-shaped ~1.1B-parameter model with random weights, saved with the embedded model's tokenizer."
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    if (dest/"config.json").exists(): return dest
    tok = AutoTokenizer.from_pretrained(bench.model_path())
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, **LLAMA_1B)
    with torch.device("cuda"): m = LlamaForCausalLM(cfg).to(torch.bfloat16)
    m.save_pretrained(dest, safe_serialization=True); tok.save_pretrained(dest)
    return dest

def train_1b(a, path, quantized: bool, strategy: str | None = None) -> dict:
    import torch, pandas as pd
    from llmnb.api import LLM
    bs, gas = a.batch
    train, _, _ = bench.rows_for(argparse.Namespace(rows=a.rows, val_rows=0, predict_rows=0))
    cfg = dict(base_model=str(path), input_features=[dict(name="prompt", type="text")],
               output_features=[dict(name="answer", type="text")], prompt=dict(template="{prompt}" + bench.SUFFIX),
               adapter=dict(type="lora", r=16, alpha=32, dropout=0.0, target_modules=bench.TARGETS),
               trainer=dict(type="finetune", learning_rate=2e-4, epochs=1, batch_size=bs, gradient_accumulation_steps=gas,
                            packing=True, enable_gradient_checkpointing=a.checkpointing, compile=a.compile, seed=42,
                            learning_rate_scheduler=dict(decay="constant", warmup_fraction=0.0)))
    if quantized: cfg["quantization"] = dict(bits=4, bnb_4bit_compute_dtype="bfloat16")
    if strategy: cfg["backend"] = dict(type="local", trainer=dict(strategy=strategy))
    llm = LLM(cfg, device="cuda", dtype=torch.bfloat16).load_base()
    base = llm.model
    n_all = sum(p.numel() for p in base.parameters()) * (2 if quantized else 1)  # 4-bit params are packed two per byte
    n_emb = base.get_input_embeddings().weight.numel()
    df = pd.DataFrame([dict(prompt=r["prompt"], answer=r["answer"]) for r in train])
    with bench.Meter(llm.model) as m:
        st = llm.train(training_set=df, output_directory=tempfile.mkdtemp(prefix="bench-1b-"), progress=False)
    tot, sup = st["total_tokens"], st["supervised_tokens"]
    flops = 4 * (n_all - n_emb) * tot + 4 * n_emb * sup
    name = "QLoRA 4-bit" if quantized else "bf16 LoRA" + (f", {strategy}" if strategy else "")
    return dict(variant="1B " + name, params=n_all, wall_s=m.wall,
                total_tokens=tot, supervised_tokens=sup, tokens_per_s=tot / m.wall, supervised_tokens_per_s=sup / m.wall,
                model_tflops_per_s=flops / m.wall / 1e12, peak_gpu_mb=m.gpu_peak_mb, batch=f"{bs}x{gas}",
                checkpointing=a.checkpointing, compile=a.compile)

def _engine_prompts(a):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(bench.model_path())
    _, _, prompts = bench.rows_for(argparse.Namespace(rows=0, val_rows=0, predict_rows=a.predict_rows))
    return tok, [p["prompt"] + bench.SUFFIX for p in prompts]

def predict_transformers(a) -> dict:
    "llmnb's default engine on the GPU in bf16."
    import torch, pandas as pd
    from llmnb.api import LLM
    tok, texts = _engine_prompts(a)
    cfg = dict(base_model="smollm2-135m-instruct", input_features=[dict(name="prompt", type="text")],
               output_features=[dict(name="answer", type="text")], prompt=dict(template="{prompt}"),
               generation=dict(max_new_tokens=a.max_new_tokens, do_sample=False))
    llm = LLM(cfg, device="cuda", dtype=torch.bfloat16).load_base()
    with bench.Meter() as m: out = llm.predict(pd.DataFrame(dict(prompt=texts)))
    return dict(variant="llmnb (transformers)", wall_s=m.wall, texts=out["answer_predictions"].tolist(),
                generated_tokens=int(out["answer_num_tokens"].sum()), peak_gpu_mb=m.gpu_peak_mb)

def predict_vllm(a) -> dict:
    "vLLM's offline engine on the same token ids (the tokenizer's BOS handling as transformers'), greedy."
    try: import vllm
    except ImportError: return dict(variant="vllm", error="vllm is not installed (pip install vllm)")
    tok, texts = _engine_prompts(a)
    ids = tok(texts)["input_ids"]
    eng = vllm.LLM(model=str(bench.model_path()), dtype="bfloat16", seed=0, gpu_memory_utilization=0.5)
    sp = vllm.SamplingParams(temperature=0.0, max_tokens=a.max_new_tokens, skip_special_tokens=True)
    with bench.Meter() as m: outs = eng.generate([vllm.TokensPrompt(prompt_token_ids=i) for i in ids], sp, use_tqdm=False)
    return dict(variant=f"vllm {vllm.__version__}", wall_s=m.wall, texts=[o.outputs[0].text.strip() for o in outs],
                generated_tokens=sum(len(o.outputs[0].token_ids) for o in outs), peak_gpu_mb=m.gpu_peak_mb)

def engines(a, argv) -> list[dict]:
    "Each engine in its own process, transformers first; agreement is counted against llmnb's answers."
    rows = []
    for kind in ("transformers", "vllm"):
        out = Path(tempfile.mkstemp(suffix=".json")[1])
        r = subprocess.run([sys.executable, __file__, "--worker", f"predict_{kind}", "--json", str(out)] + argv)
        rows.append(json.loads(out.read_text()) if r.returncode == 0 else dict(variant=kind, error=f"exit {r.returncode}"))
    ref = rows[0].get("texts")
    for r in rows:
        if "wall_s" in r:
            r.update(prompts_per_s=a.predict_rows / r["wall_s"], generated_tokens_per_s=r["generated_tokens"] / r["wall_s"])
            if ref: r["same_as_llmnb"] = f"{sum(x == y for x, y in zip(r['texts'], ref))}/{len(ref)}"
    print(bench.table(rows, [("variant", lambda r: r["variant"]), ("prompts/s", lambda r: r.get("prompts_per_s") and round(r["prompts_per_s"], 2)),
                             ("gen. tok/s", lambda r: r.get("generated_tokens_per_s") and round(r["generated_tokens_per_s"])),
                             ("peak GPU MB", lambda r: r.get("peak_gpu_mb") and round(r["peak_gpu_mb"])),
                             ("same as llmnb", lambda r: r.get("same_as_llmnb", r.get("error", "")))]))
    return rows

def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=512, help="training rows for the 1B runs")
    ap.add_argument("--batch", default="16x1", help="rows per step x accumulation steps")
    ap.add_argument("--checkpointing", action="store_true"); ap.add_argument("--compile", action="store_true")
    ap.add_argument("--skip-small", action="store_true", help="skip run.py --full (the 135M comparison)")
    ap.add_argument("--only-engines", action="store_true", help="only the prediction engines (vLLM against transformers)")
    ap.add_argument("--skip-engines", action="store_true", help="skip the prediction engines")
    ap.add_argument("--predict-rows", type=int, default=256); ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--out", default=str(HERE/"results"/"gpu.json"))
    ap.add_argument("--worker", help=argparse.SUPPRESS); ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.batch = tuple(map(int, a.batch.lower().split("x")))
    return a

def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    a = parse(argv)
    import torch
    if a.worker:
        got = globals()[a.worker](a) if a.worker.startswith("predict_") else train_1b(a, Path(a.model), a.worker == "qlora", "deepspeed" if a.worker == "deepspeed" else None)
        if int(os.environ.get("RANK", "0")) == 0: Path(a.json).write_text(json.dumps(got))
        return
    if not torch.cuda.is_available(): sys.exit("bench/gpu.py needs a CUDA GPU; on a CPU run bench/run.py")
    res = dict(gpu=torch.cuda.get_device_name(), bf16_matmul_tflops=matmul_tflops())
    if not a.skip_engines: res["engines"] = engines(a, [x for x in argv if x != "--only-engines"])
    if a.only_engines:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True); Path(a.out).write_text(json.dumps(res, indent=1, default=str)); return
    if not a.skip_small: res["small"] = bench.main(["--full", "--precision", "bf16", "--out", str(Path(a.out).with_name("gpu_small.json"))])
    path = build_model(Path(tempfile.gettempdir())/"llmnb-bench-llama-1b")
    res["large"] = []
    import importlib.util
    for kind in ("lora", "qlora", "deepspeed"):
        out = Path(tempfile.mkstemp(suffix=".json")[1])
        if kind == "deepspeed" and not importlib.util.find_spec("deepspeed"):
            res["large"].append(dict(variant="1B bf16 LoRA, deepspeed", error="deepspeed is not installed: pip install deepspeed"))
            continue
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1"] if kind == "deepspeed" else [sys.executable]
        r = subprocess.run(launch + [__file__, "--worker", kind, "--model", str(path), "--json", str(out)] + argv)
        got = json.loads(out.read_text()) if r.returncode == 0 else dict(variant=kind, error=f"exit {r.returncode}")
        if "model_tflops_per_s" in got: got["mfu"] = got["model_tflops_per_s"] / res["bf16_matmul_tflops"]
        res["large"].append(got)
    print(f"\n{res['gpu']}: measured bf16 matmul {res['bf16_matmul_tflops']:.0f} TFLOP/s")
    cols = [("variant", lambda r: r["variant"]), ("batch", lambda r: r.get("batch", "")),
            ("tok/s", lambda r: r.get("tokens_per_s") and round(r["tokens_per_s"])),
            ("sup. tok/s", lambda r: r.get("supervised_tokens_per_s") and round(r["supervised_tokens_per_s"])),
            ("MFU %", lambda r: r.get("mfu") and round(100 * r["mfu"], 1)),
            ("peak GPU MB", lambda r: r.get("peak_gpu_mb") and round(r["peak_gpu_mb"])), ("wall s", lambda r: r.get("wall_s") and round(r["wall_s"], 1)),
            ("note", lambda r: r.get("error", ""))]
    print(bench.table(res["large"], cols))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1, default=str))
    print(f"wrote {a.out}")

if __name__ == "__main__": main()
