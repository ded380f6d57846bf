"""llmnb performance benchmark: LoRA fine-tuning and greedy prediction against TRL, transformers and a one-sample loop.

One command runs every variant, each in its own subprocess (so peak RSS is per variant), one after the other,
on the same rows with the same settings, then prints a table with ratios and writes JSON:

    python bench/run.py                      # quick: 64 training rows, 32 validation rows, 32 prompts
    python bench/run.py --full               # the issue's sizes: 936 training rows, 64 validation, 256 prompts
    python bench/run.py --only llmnb,trl_best --rows 128

Training: the embedded SmolLM2-135M-Instruct, LoRA r=16 (alpha 32, no dropout) on q,k,v,o,gate,up,down; effective batch
16 rows; one epoch; constant learning rate; gradient clipping 1.0; completion-only loss; same precision for all.
  llmnb        `LLM(config).train(...)`: rows packed without padding, length-grouped, loss only at answer positions
  trl_typical  TRL `SFTTrainer` as most users configure it: prompt-completion data (completion-only loss), no packing,
               batch 4 x accumulation 4, its defaults otherwise (gradient checkpointing on)
  trl_best     TRL with its best options: padding-free batches, no gradient checkpointing, its chunked (fused) LM-head loss
  hf_trainer   transformers `Trainer` + PEFT with a padding collator (`DataCollatorForSeq2Seq`)
  llmnb_ddp2   llmnb on 2 processes (DDP, gloo on a CPU) under torchrun, one thread each, the same 16 rows a step
               (accumulation halved); only with `--only ...,llmnb_ddp2`; compare it with `--threads 1` llmnb runs
Every variant's validation loss is computed afterwards by the same function (`validation_loss`): completion-only,
token-mean cross-entropy on the same validation rows, from full logits, in fp32.

DPO (`--only dpo_llmnb,dpo_trl`): --rows pairs from `llmnb.align.dates_pairs` (correct ISO date chosen, a plausible
wrong one rejected), --val-rows held-out pairs; LoRA as above, beta 0.1, effective batch 16 pairs, one epoch, constant rate.
  dpo_llmnb    `LLM(config).train(...)` with `trainer.type: dpo`: the pairs in one packed forward, each pair's prompt
               computed once (prompt, chosen, rejected in one row, a 4D mask: `llmnb.align.pair_logps`), answer-only
               logits, the reference as the adapter-disabled policy (its forward shares the prompt too)
  dpo_trl      TRL `DPOTrainer` with `peft_config` (its reference: the adapter-disabled policy), no gradient checkpointing
Both report pair tokens/s (prompt + chosen + prompt + rejected tokens of the shared encoding, per second of training),
peak RSS and the held-out preference accuracy (`llmnb.align.preference_accuracy`, the same function for both).

Prediction: the same prompts, greedy, `max_new_tokens` 64, base model, fp32:
  llmnb        `LLM(config).predict(...)` with its default engine, `auto`: llama.cpp's batched decoding on a CPU where
               llama-cpp-python is installed and there are 64 prompts or more (the GGUF conversion is in its time)
  llmnb_transformers  the same on its transformers engine: prompts sorted by length, batched, KV cache, each row cut
               at its EOS
  loop         one `model.generate` call per prompt (what the reference does)
  pipeline     transformers `text-generation` pipeline with `batch_size`
  llama_cpp    llama.cpp (llama-cpp-python, built portably: GGML_NATIVE=OFF + AVX2/FMA/F16C) on a GGUF that llmnb's
               exporter writes from the same weights (f32 by default, `--llama-cpp-type`), greedy, one prompt at a time
               through `Llama.generate` (the high-level API)
  llama_cpp_batched  llama.cpp's batched API as its `parallel` example / `llama-server --parallel` use it: `--llama-cpp-slots`
               sequences per `llama_decode`, continuous batching (`llmnb.export.llama_cpp_generate`, what `--engine llama_cpp` runs)
Outputs are compared text for text.
"""
from __future__ import annotations
import argparse, json, os, resource, shutil, subprocess, sys, tempfile, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import data as bench_data

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SUFFIX = "\nAnswer:\n"  # appended to every prompt; a newline boundary tokenises the same alone or joined to the answer
TRAIN_VARIANTS = ["llmnb", "trl_typical", "trl_best", "hf_trainer"]
PREDICT_VARIANTS = ["llmnb", "llmnb_transformers", "loop", "pipeline", "llama_cpp", "llama_cpp_batched"]
DPO_VARIANTS = ["dpo_llmnb", "dpo_trl"]   # run when named in --only: DPO on the same date pairs, LoRA, same precision
CHAT_VARIANTS = ["llmnb_single", "llmnb_chat"]   # run when named in --only: the same rows as chat-template single turns / conversations
N_ROWS, VAL, PRED = 1000, slice(936, 1000), slice(680, 936)  # fixed validation and prediction rows

# ---------------------------------------------------------------- shared helpers (used inside the workers)

def rows_for(a):
    rows = bench_data.load()
    return rows[:min(a.rows, VAL.start)], rows[VAL][:a.val_rows], rows[PRED][:a.predict_rows]

def model_path():
    from llmnb.model import resolve_base_model
    return resolve_base_model("smollm2-135m-instruct")

def load_plain(dtype="float32"):
    "Model and tokenizer as a TRL / transformers user loads them."
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    p = model_path()
    m = AutoModelForCausalLM.from_pretrained(p, dtype=getattr(torch, dtype), attn_implementation="sdpa")
    tok = AutoTokenizer.from_pretrained(p)
    if tok.pad_token is None: tok.pad_token = tok.eos_token
    return m.to(_device()), tok

def _device():
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"

def encode(tok, rows):
    "Shared tokenisation: prompt ids, then answer ids + EOS. All variants train on exactly these token sequences."
    P = tok([r["prompt"] + SUFFIX for r in rows])["input_ids"]
    A = tok([r["answer"] for r in rows], add_special_tokens=False)["input_ids"]
    return [dict(input_ids=p + a + [tok.eos_token_id], n_prompt=len(p)) for p, a in zip(P, A)]

def supervised_tokens(enc): return sum(len(e["input_ids"]) - e["n_prompt"] for e in enc)

def lora_config():
    import peft
    return peft.LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")

def validation_loss(model, tok, rows, batch_size=1) -> float:
    "Completion-only token-mean cross-entropy of `model` on `rows`: full logits, right padding, fp32; the same for every variant."
    import torch, torch.nn.functional as F
    enc = encode(tok, rows)
    was = model.training; model.eval()
    dev = next(model.parameters()).device
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(enc), batch_size):
            b = enc[i:i + batch_size]
            L = max(len(e["input_ids"]) for e in b)
            ids = torch.full((len(b), L), tok.pad_token_id); mask = torch.zeros((len(b), L), dtype=torch.long)
            lab = torch.full((len(b), L), -100)
            for j, e in enumerate(b):
                k = len(e["input_ids"]); ids[j, :k] = torch.tensor(e["input_ids"]); mask[j, :k] = 1
                lab[j, e["n_prompt"]:k] = torch.tensor(e["input_ids"][e["n_prompt"]:])
            logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits[:, :-1].float()
            y = lab[:, 1:].to(dev)
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100, reduction="sum"))
            n += int((y != -100).sum())
    model.train(was)
    return total / n

class Meter:
    "Wall time, process CPU time and (on a GPU) peak memory of a block; counts the tokens that enter the embedding layer."
    def __init__(self, model=None): self.model, self.tokens, self.head_rows, self.h = model, 0, 0, []
    def __enter__(self):
        import torch
        if self.model is not None:
            emb = self.model.get_input_embeddings()
            def hook(mod, args, out):
                if torch.is_grad_enabled() and mod.training: self.tokens += args[0].numel()
            def head_hook(mod, args, out):
                if torch.is_grad_enabled() and mod.training and torch._C._current_graph_task_id() == -1:
                    self.head_rows += args[0].shape[:-1].numel()
            self.h = [emb.register_forward_hook(hook), self.model.get_output_embeddings().register_forward_hook(head_hook)]
        if torch.cuda.is_available(): torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
        self.t0, self.c0 = time.perf_counter(), _cpu()
        return self
    def __exit__(self, *a):
        import torch
        if torch.cuda.is_available(): torch.cuda.synchronize()
        self.wall, self.cpu = time.perf_counter() - self.t0, _cpu() - self.c0
        self.gpu_peak_mb = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
        for h in self.h: h.remove()

def _cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

def peak_rss_mb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

# ---------------------------------------------------------------- training workers

def train_llmnb(a, train, val, tmp):
    import pandas as pd
    from llmnb.api import LLM
    bs, gas = a.llmnb_batch
    cfg = dict(base_model="smollm2-135m-instruct", input_features=[dict(name="prompt", type="text")],
               output_features=[dict(name="answer", type="text")], prompt=dict(template="{prompt}" + SUFFIX),
               adapter=dict(type="lora", r=16, alpha=32, dropout=0.0, target_modules=TARGETS),
               trainer=dict(type="finetune", learning_rate=a.lr, epochs=1, batch_size=bs, gradient_accumulation_steps=gas,
                            packing=True, enable_gradient_checkpointing=a.checkpointing, compile=a.compile, seed=42,
                            use_mixed_precision=a.precision == "bf16",
                            learning_rate_scheduler=dict(decay="constant", warmup_fraction=0.0)))
    llm = LLM(cfg, dtype=None)
    llm.load_base()
    df = pd.DataFrame([dict(prompt=r["prompt"], answer=r["answer"]) for r in train])
    with Meter(llm.model) as m:
        stats = llm.train(training_set=df, output_directory=str(tmp/"run"), progress=False)
    return m, llm.model, llm.tokenizer, dict(steps=stats["steps_done"], llmnb_supervised_tokens=stats["supervised_tokens"],
                                             llmnb_total_tokens=stats["total_tokens"], batch=f"{bs}x{gas} packed")

def _train_llmnb_as(a, train, tmp, chat: bool):
    "llmnb on the same rows through the chat template: one-turn text rows (`prompt.chat_template`) or conversations (`format: chat`)."
    from llmnb.api import LLM
    bs, gas = a.llmnb_batch
    t = dict(type="finetune", learning_rate=a.lr, epochs=1, batch_size=bs, gradient_accumulation_steps=gas, packing=True, seed=42,
             use_mixed_precision=a.precision == "bf16", learning_rate_scheduler=dict(decay="constant", warmup_fraction=0.0))
    cfg = dict(base_model="smollm2-135m-instruct", output_features=[dict(name="answer", type="text")], trainer=t,
               adapter=dict(type="lora", r=16, alpha=32, dropout=0.0, target_modules=TARGETS))
    if chat:
        cfg["input_features"] = [dict(name="messages", type="text", preprocessing=dict(format="chat"))]
        data = [dict(messages=[dict(role="user", content=r["prompt"] + SUFFIX), dict(role="assistant", content=r["answer"])]) for r in train]
    else:
        cfg.update(input_features=[dict(name="prompt", type="text")], prompt=dict(template="{prompt}" + SUFFIX, chat_template=True))
        data = [dict(prompt=r["prompt"], answer=r["answer"]) for r in train]
    llm = LLM(cfg, dtype=None)
    llm.load_base()
    with Meter(llm.model) as m:
        stats = llm.train(training_set=data, output_directory=str(tmp/"run"), progress=False)
    return m, llm.model, llm.tokenizer, dict(steps=stats["steps_done"], llmnb_supervised_tokens=stats["supervised_tokens"],
                                             llmnb_total_tokens=stats["total_tokens"], batch=f"{bs}x{gas} packed",
                                             llmnb_supervised_tokens_per_s=stats["supervised_tokens"] / m.wall)

def train_llmnb_single(a, train, val, tmp): return _train_llmnb_as(a, train, tmp, chat=False)
def train_llmnb_chat(a, train, val, tmp): return _train_llmnb_as(a, train, tmp, chat=True)

def train_llmnb_ddp2(a, train, val, tmp):
    "llmnb under torchrun with 2 processes: each takes half of every step's batches (accumulation halved)."
    bs, gas = a.llmnb_batch
    a.llmnb_batch = (bs, max(gas // 2, 1))
    m, model, tok, info = train_llmnb(a, train, val, tmp)
    return m, model, tok, {**info, "batch": f"{bs}x{max(gas // 2, 1)} packed x 2 processes (DDP)"}

def _sft(a, train, tmp, **kw):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer
    model, tok = load_plain()
    ds = Dataset.from_list([dict(prompt=r["prompt"] + SUFFIX, completion=r["answer"]) for r in train])
    args = SFTConfig(output_dir=str(tmp/"trl"), learning_rate=a.lr, num_train_epochs=1, lr_scheduler_type="constant",
                     warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to=[],
                     seed=42, bf16=a.precision == "bf16", use_cpu=not __import__('torch').cuda.is_available(), disable_tqdm=True, **kw)
    with Meter(model) as m:
        tr = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=lora_config())
        out = tr.train()
    return m, tr.model, tok, dict(steps=out.global_step, trl_supervised_tokens=sum(sum(l != -100 for l in x[1:]) for x in tr.train_dataset["labels"]) if "labels" in tr.train_dataset.column_names else None)

def train_trl_typical(a, train, val, tmp):
    m, model, tok, info = _sft(a, train, tmp, per_device_train_batch_size=4, gradient_accumulation_steps=4)
    return m, model, tok, {**info, "batch": "4x4 padded, grad. checkpointing (TRL default)"}

def train_trl_best(a, train, val, tmp):
    bs, gas = a.trl_batch
    m, model, tok, info = _sft(a, train, tmp, per_device_train_batch_size=bs, gradient_accumulation_steps=gas,
                               padding_free=True, max_length=None, gradient_checkpointing=False)
    return m, model, tok, {**info, "batch": f"{bs}x{gas} padding-free"}

def train_hf_trainer(a, train, val, tmp):
    import peft
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments, DataCollatorForSeq2Seq
    model, tok = load_plain()
    model = peft.get_peft_model(model, lora_config())
    args = TrainingArguments(output_dir=str(tmp/"hf"), per_device_train_batch_size=4, gradient_accumulation_steps=4,
                             learning_rate=a.lr, num_train_epochs=1, lr_scheduler_type="constant", warmup_steps=0,
                             weight_decay=0.0, max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to=[],
                             seed=42, bf16=a.precision == "bf16", use_cpu=not __import__('torch').cuda.is_available(), disable_tqdm=True, remove_unused_columns=False)
    with Meter(model) as m:
        enc = encode(tok, train)
        ds = Dataset.from_list([dict(input_ids=e["input_ids"], attention_mask=[1] * len(e["input_ids"]),
                                     labels=[-100] * e["n_prompt"] + e["input_ids"][e["n_prompt"]:]) for e in enc])
        tr = Trainer(model=model, args=args, train_dataset=ds, data_collator=DataCollatorForSeq2Seq(tok, padding=True))
        out = tr.train()
    return m, model, tok, dict(steps=out.global_step, batch="4x4 padded")

def run_train(a, name):
    import torch
    if a.threads: torch.set_num_threads(a.threads)
    train, val, _ = rows_for(a)
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    try:
        m, model, tok, info = globals()[f"train_{name}"](a, train, val, tmp)
        rss = peak_rss_mb()  # before the validation pass, which is the same for every variant
        sup = supervised_tokens(encode(tok, train))
        real = sum(len(e["input_ids"]) for e in encode(tok, train))
        t0 = time.perf_counter()
        vl = validation_loss(model, tok, val)
        return dict(variant=name, wall_s=m.wall, cpu_s=m.cpu, supervised_tokens=sup, real_tokens=real,
                    model_tokens=m.tokens, model_tokens_per_real=m.tokens / real if real else None,
                    head_rows=m.head_rows or None, head_rows_per_supervised=(m.head_rows / sup) if m.head_rows else None,
                    supervised_tokens_per_s=sup / m.wall, supervised_tokens_per_cpu_s=sup / max(m.cpu, 1e-9),
                    peak_rss_mb=rss, peak_gpu_mb=m.gpu_peak_mb, validation_loss=vl,
                    validation_s=time.perf_counter() - t0, **info)
    finally: shutil.rmtree(tmp, ignore_errors=True)

# ---------------------------------------------------------------- DPO workers

DPO_TEMPLATE = "Write this date in ISO format (YYYY-MM-DD): {date}"

def _dpo_config(a):
    bs, gas = a.llmnb_batch
    return dict(base_model="smollm2-135m-instruct", input_features=[dict(name="date", type="text")],
                output_features=[dict(name="iso", type="text")], prompt=dict(template=DPO_TEMPLATE + SUFFIX),
                adapter=dict(type="lora", r=16, alpha=32, dropout=0.0, target_modules=TARGETS),
                trainer=dict(type="dpo", dpo_beta=0.1, learning_rate=a.lr, epochs=1, batch_size=bs, gradient_accumulation_steps=gas,
                             seed=42, use_mixed_precision=a.precision == "bf16", trackers=[], early_stop=-1, skip_all_evaluation=True,
                             learning_rate_scheduler=dict(decay="constant", warmup_fraction=0.0)))

def dpo_llmnb(a, train, tmp):
    from llmnb.api import LLM
    llm = LLM(_dpo_config(a), dtype=None).load_base()
    with Meter(llm.model) as m: st = llm.train(training_set=train, output_directory=str(tmp/"run"), progress=False)
    return m, llm.model, llm.tokenizer, dict(steps=st["steps_done"], batch="%dx%d packed pairs, prompt shared" % a.llmnb_batch)

def dpo_trl(a, train, tmp):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer
    model, tok = load_plain()
    bs, gas = a.trl_batch
    ds = Dataset.from_dict(dict(prompt=[DPO_TEMPLATE.format(date=d) + SUFFIX for d in train["date"]],
                                chosen=list(train["iso"]), rejected=list(train["rejected"])))
    args = DPOConfig(output_dir=str(tmp/"trl"), learning_rate=a.lr, num_train_epochs=1, lr_scheduler_type="constant", beta=0.1,
                     warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to=[],
                     per_device_train_batch_size=bs, gradient_accumulation_steps=gas, gradient_checkpointing=False, seed=42,
                     bf16=a.precision == "bf16", use_cpu=not __import__('torch').cuda.is_available(), disable_tqdm=True)
    with Meter(model) as m:
        tr = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=lora_config())
        out = tr.train()
    return m, tr.model, tok, dict(steps=out.global_step, batch=f"{bs}x{gas} padded pairs")

def run_dpo(a, name):
    import torch
    from llmnb.align import dates_pairs, preference_accuracy
    from llmnb.config import load_config
    if a.threads: torch.set_num_threads(a.threads)
    df = dates_pairs(a.rows + a.val_rows, seed=0)
    train, val = df[:a.rows], df[a.rows:]
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    try:
        m, model, tok, info = globals()[name](a, train, tmp)
        rss = peak_rss_mb()
        P = tok([DPO_TEMPLATE.format(date=d) + SUFFIX for d in train["date"]])["input_ids"]
        A = [len(x) + 1 for c in ("iso", "rejected") for x in tok(list(train[c]), add_special_tokens=False)["input_ids"]]
        real = 2 * sum(map(len, P)) + sum(A)
        acc = preference_accuracy(model, tok, load_config(_dpo_config(a)), val)
        return dict(variant=name, wall_s=m.wall, cpu_s=m.cpu, pair_tokens=real, pair_tokens_per_s=real / m.wall,
                    pair_tokens_per_cpu_s=real / max(m.cpu, 1e-9), peak_rss_mb=rss, peak_gpu_mb=m.gpu_peak_mb,
                    preference_accuracy=acc, pairs=len(train), held_out=len(val), **info)
    finally: shutil.rmtree(tmp, ignore_errors=True)

# ---------------------------------------------------------------- prediction workers

def predict_llmnb(a, prompts, engine="auto"):
    "llmnb's `predict` with its default engine (`auto`: llama.cpp for CPU batch work where installed), GGUF conversion included."
    import pandas as pd
    from llmnb.api import LLM
    cfg = dict(base_model="smollm2-135m-instruct", input_features=[dict(name="prompt", type="text")],
               output_features=[dict(name="answer", type="text")], prompt=dict(template="{prompt}" + SUFFIX),
               generation=dict(max_new_tokens=a.max_new_tokens, do_sample=False))
    llm = LLM(cfg).load_base(); llm.engine = engine
    df = pd.DataFrame(dict(prompt=[p["prompt"] for p in prompts]))
    with Meter() as m: out = llm.predict(df, **(dict(batch_size=a.llmnb_predict_batch) if a.llmnb_predict_batch else {}))
    ids = llm.tokenizer(out["answer_predictions"].tolist(), add_special_tokens=False)["input_ids"]
    return m, out["answer_predictions"].tolist(), out["answer_num_tokens"].tolist()

def predict_llmnb_transformers(a, prompts):
    "llmnb's `predict` on its transformers engine (`llm.engine = 'transformers'`)."
    return predict_llmnb(a, prompts, engine="transformers")

def _gen_config(model, tok, a):
    from transformers import GenerationConfig
    eos = model.generation_config.eos_token_id
    return GenerationConfig(max_new_tokens=a.max_new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=tok.pad_token_id)

def _cut(ids, eos):
    eos = set(eos if isinstance(eos, list) else [eos])
    for k, t in enumerate(ids):
        if t in eos: return ids[:k + 1]
    return ids

def predict_loop(a, prompts):
    import torch
    model, tok = load_plain(); model.eval()
    gc = _gen_config(model, tok, a)
    texts, counts = [], []
    with Meter() as m, torch.no_grad():
        for p in prompts:
            ids = tok(p["prompt"] + SUFFIX, return_tensors="pt")["input_ids"].to(model.device)
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gc)[0, ids.shape[1]:].tolist()
            out = _cut(out, gc.eos_token_id)
            texts.append(tok.decode(out, skip_special_tokens=True).strip()); counts.append(len(out))
    return m, texts, counts

def predict_pipeline(a, prompts):
    from transformers import pipeline
    model, tok = load_plain(); model.eval()
    tok.padding_side = "left"
    gc = _gen_config(model, tok, a)
    pipe = pipeline("text-generation", model=model, tokenizer=tok, batch_size=a.predict_batch)
    with Meter() as m:
        out = pipe([p["prompt"] + SUFFIX for p in prompts], generation_config=gc, return_full_text=False)
    texts = [o[0]["generated_text"].strip() for o in out]
    # the pipeline returns text only: count generated tokens by re-tokenising, + 1 for the EOS of rows that stopped early
    n = [len(x) for x in tok(texts, add_special_tokens=False)["input_ids"]]
    return m, texts, [min(k + 1, a.max_new_tokens) for k in n]

def predict_llama_cpp(a, prompts):
    "llama.cpp on a GGUF of the same weights (exported once by llmnb's exporter into the bench cache)."
    import llama_cpp
    from llmnb.export import to_gguf
    from llmnb.model import cache_dir
    from transformers import AutoTokenizer
    p = model_path()
    f = cache_dir()/"bench"/f"smollm2-135m-{a.llama_cpp_type}.gguf"
    if not f.exists(): to_gguf(p, f, a.llama_cpp_type)
    tok = AutoTokenizer.from_pretrained(p)
    m = llama_cpp.Llama(str(f), n_ctx=2048, n_threads=a.threads or os.cpu_count(), verbose=False)
    eos = {m.token_eos()}
    texts, counts = [], []
    with Meter() as meter:
        for r in prompts:
            out = []
            for t in m.generate(tok(r["prompt"] + SUFFIX)["input_ids"], temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
                out.append(t)
                if t in eos or len(out) == a.max_new_tokens: break
            texts.append(tok.decode(out, skip_special_tokens=True).strip()); counts.append(len(out))
    return meter, texts, counts

def _llama_cpp_gguf(a):
    "The GGUF of the bench's weights (f32: exactly the fp32 weights the other variants use), exported once into the cache."
    from llmnb.export import to_gguf
    from llmnb.model import cache_dir
    f = cache_dir()/"bench"/f"smollm2-135m-{a.llama_cpp_type}.gguf"
    if not f.exists(): to_gguf(model_path(), f, a.llama_cpp_type)
    return f

def predict_llama_cpp_batched(a, prompts):
    """llama.cpp as its docs recommend for batch work: parallel sequences decoded together (the `parallel` / `batched`
    examples, what llama-server's `--parallel` slots do): `--llama-cpp-slots` sequences share each `llama_decode`; a
    finished sequence's KV cells are freed and the next prompt's prefill joins the next batch (continuous batching)."""
    from llmnb.export import llama_cpp_generate
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_path())
    ids = [tok(r["prompt"] + SUFFIX)["input_ids"] for r in prompts]
    from transformers import GenerationConfig
    eos, f = GenerationConfig.from_pretrained(model_path()).eos_token_id, _llama_cpp_gguf(a)
    with Meter() as meter:
        outs = llama_cpp_generate(f, ids, a.max_new_tokens, eos, slots=a.llama_cpp_slots,
                                  threads=a.threads or os.cpu_count())
    return meter, [tok.decode(o, skip_special_tokens=True).strip() for o in outs], [len(o) for o in outs]

def run_predict(a, name):
    import torch
    if a.threads: torch.set_num_threads(a.threads)
    _, _, prompts = rows_for(a)
    if name == "loop" and a.loop_rows: prompts = prompts[:a.loop_rows]   # a sample: its cost per prompt does not depend on the others
    m, texts, counts = globals()[f"predict_{name}"](a, prompts)
    return dict(variant=name, wall_s=m.wall, cpu_s=m.cpu, prompts=len(prompts), generated_tokens=int(sum(counts)),
                prompts_per_s=len(prompts) / m.wall, generated_tokens_per_s=sum(counts) / m.wall,
                peak_rss_mb=peak_rss_mb(), peak_gpu_mb=m.gpu_peak_mb, texts=texts)

# ---------------------------------------------------------------- import time

def import_times(repeat=3) -> dict:
    py = sys.executable
    def best(cmd):
        ts = []
        for _ in range(repeat):
            t0 = time.perf_counter(); r = subprocess.run(cmd, capture_output=True, text=True); ts.append(time.perf_counter() - t0)
        return min(ts), r
    base, _ = best([py, "-c", "pass"])
    imp, _ = best([py, "-c", "import llmnb"])
    _, r = best([py, "-X", "importtime", "-c", "import llmnb"])
    line = [l for l in r.stderr.splitlines() if l.rstrip().endswith("| llmnb")]
    cum = int(line[-1].split("|")[1]) / 1e6 if line else None
    cli = shutil.which("llmnb", path=str(Path(py).parent))
    helpt, hr = best([cli, "--help"]) if cli else (None, None)
    return dict(python_startup_s=base, import_llmnb_s=imp, import_llmnb_minus_startup_s=imp - base, importtime_cumulative_s=cum,
                cli_help_s=helpt, cli_help_ok=(hr.returncode == 0) if hr else None)

# ---------------------------------------------------------------- orchestration

def worker(a):
    kind, name = a.worker.split(":")
    res = run_train(a, name) if kind == "train" else run_dpo(a, name) if kind == "dpo" else run_predict(a, name)
    if int(os.environ.get("RANK", "0")) == 0: Path(a.json).write_text(json.dumps(res))

def spawn(a, kind, name) -> dict:
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    argv = [sys.executable, __file__, "--worker", f"{kind}:{name}", "--json", str(out)] + a.passthrough
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    if name == "llmnb_ddp2":
        argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541"] + argv[1:]
        env["OMP_NUM_THREADS"] = "1"
    print(f"  running {kind} {name} ...", flush=True)
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout[-3000:], r.stderr[-6000:], file=sys.stderr)
        return dict(variant=name, error=f"exit {r.returncode}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''}")
    res = json.loads(out.read_text()); out.unlink()
    res["process_s"] = time.perf_counter() - t0
    print("   ", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.items() if k != "texts"}, flush=True)
    return res

def _fmt(x, nd=1):
    if x is None: return "-"
    return f"{x:,.{nd}f}" if isinstance(x, float) else str(x)

def table(rows, cols) -> str:
    cells = [[h for h, _ in cols]] + [[_fmt(f(r)) if not isinstance(f(r), str) else f(r) for _, f in cols] for r in rows]
    w = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    line = lambda c: "| " + " | ".join(x.rjust(w[i]) if i else x.ljust(w[i]) for i, x in enumerate(c)) + " |"
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (x + 2) for x in w) + "|"] + [line(c) for c in cells[1:]])

def report(res) -> str:
    out = []
    tr = [r for r in res["train"] if "error" not in r]
    if tr:
        out.append(f"Training: {res['settings']['rows']} rows, 1 epoch, LoRA r=16, effective batch 16, {res['settings']['precision']}")
        g = lambda k, nd=1: (lambda r: f"{r[k]:,.{nd}f}" if r.get(k) is not None else "-")
        out.append(table(tr, [("variant", lambda r: r["variant"]), ("batch", lambda r: r.get("batch", "")),
                              ("sup. tok/s", g("supervised_tokens_per_s")), ("sup. tok/CPU-s", g("supervised_tokens_per_cpu_s")),
                              ("wall s", g("wall_s")), ("model tok / real", g("model_tokens_per_real", 2)),
                              ("head rows / sup.", g("head_rows_per_supervised", 2)),
                              ("peak RSS MB", g("peak_rss_mb", 0)), ("peak GPU MB", g("peak_gpu_mb", 0)),
                              ("val. loss", g("validation_loss", 4))]))
        ll = next((r for r in tr if r["variant"] == "llmnb"), None)
        if ll:
            for r in tr:
                if r is ll: continue
                if r["variant"] == "llmnb_ddp2":
                    out.append(f"  2-process DDP vs 1 process: {r['supervised_tokens_per_s'] / ll['supervised_tokens_per_s']:.2f}x tokens/s"); continue
                out.append(f"  llmnb vs {r['variant']}: {ll['supervised_tokens_per_s'] / r['supervised_tokens_per_s']:.2f}x tokens/s, "
                           f"{ll['supervised_tokens_per_cpu_s'] / r['supervised_tokens_per_cpu_s']:.2f}x tokens/CPU-s, "
                           f"RSS {ll['peak_rss_mb'] / r['peak_rss_mb']:.2f}x, "
                           f"val. loss {100 * (ll['validation_loss'] / r['validation_loss'] - 1):+.2f}%")
    one, conv = (next((r for r in tr if r["variant"] == v), None) for v in CHAT_VARIANTS)
    if one and conv:
        out.append(f"  conversations vs the same rows as single turns: {conv['llmnb_supervised_tokens_per_s'] / one['llmnb_supervised_tokens_per_s']:.3f}x "
                   f"trained tokens/s ({conv['llmnb_supervised_tokens']} vs {one['llmnb_supervised_tokens']} trained, "
                   f"{conv['llmnb_total_tokens']} vs {one['llmnb_total_tokens']} total tokens)")
    dp = [r for r in res.get("dpo", []) if "error" not in r]
    if dp:
        out.append(f"\nDPO: {dp[0]['pairs']} date pairs, 1 epoch, LoRA r=16, effective batch 16 pairs, {res['settings']['precision']}; "
                   f"preference accuracy on {dp[0]['held_out']} held-out pairs")
        out.append(table(dp, [("variant", lambda r: r["variant"]), ("batch", lambda r: r.get("batch", "")),
                              ("pair tok/s", lambda r: round(r["pair_tokens_per_s"], 1)), ("wall s", lambda r: round(r["wall_s"], 1)),
                              ("peak RSS MB", lambda r: round(r["peak_rss_mb"])), ("pref. acc.", lambda r: f"{r['preference_accuracy']:.3f}")]))
        ll, tl = (next((r for r in dp if r["variant"] == v), None) for v in DPO_VARIANTS)
        if ll and tl: out.append(f"  llmnb vs TRL DPOTrainer: {ll['pair_tokens_per_s'] / tl['pair_tokens_per_s']:.2f}x tokens/s, "
                                 f"RSS {ll['peak_rss_mb'] / tl['peak_rss_mb']:.2f}x")
    pr = [r for r in res["predict"] if "error" not in r]
    if pr:
        ref = next((r for r in pr if r["variant"] == "loop"), pr[0])
        for r in pr: r["identical"] = sum(x == y for x, y in zip(r["texts"], ref["texts"]))
        for r in pr: r["compared"] = min(len(r["texts"]), len(ref["texts"]))
        out.append(f"\nPrediction: {pr[0]['prompts']} prompts, greedy, max_new_tokens {res['settings']['max_new_tokens']}; pipeline batch {res['settings']['predict_batch']}, "
                   f"llmnb {res['settings'].get('llmnb_predict_batch') or 'default (16-64 rows by a 4,096-token budget)'}")
        out.append(table(pr, [("variant", lambda r: r["variant"]), ("prompts/s", lambda r: f"{r['prompts_per_s']:.3f}"),
                              ("gen. tok/s", lambda r: round(r["generated_tokens_per_s"], 1)), ("wall s", lambda r: round(r["wall_s"], 1)),
                              ("peak RSS MB", lambda r: round(r["peak_rss_mb"])), ("peak GPU MB", lambda r: r["peak_gpu_mb"] and round(r["peak_gpu_mb"])),
                              ("same text as loop", lambda r: f"{r['identical']}/{r['compared']}")]))
        ll = next((r for r in pr if r["variant"] == "llmnb"), None)
        if ll:
            for r in pr:
                if r is not ll: out.append(f"  llmnb vs {r['variant']}: {ll['prompts_per_s'] / r['prompts_per_s']:.2f}x prompts/s")
    for r in res["train"] + res.get("dpo", []) + res["predict"]:
        if "error" in r: out.append(f"  {r['variant']}: FAILED {r['error']}")
    it = res.get("import")
    if it: out.append(f"\nimport llmnb: {it['import_llmnb_minus_startup_s']:.2f} s over Python start-up ({it['import_llmnb_s']:.2f} s in all; "
                      f"-X importtime cumulative {_fmt(it['importtime_cumulative_s'], 2)} s); llmnb --help: {_fmt(it['cli_help_s'], 2)} s")
    out.append(f"load average before/after: {res['load_before']} / {res['load_after']}; {res['settings']['threads'] or 'default'} torch threads")
    return "\n".join(out)

def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("--rows", type=int, default=64, help="training rows (at most 936)")
    ap.add_argument("--val-rows", type=int, default=32, help="validation rows (at most 64)")
    ap.add_argument("--predict-rows", type=int, default=32, help="prompts to predict (at most 256)")
    ap.add_argument("--full", action="store_true", help="936 training rows, 64 validation rows, 256 prompts")
    ap.add_argument("--only", default=None, help="comma-separated variants (train and predict names), e.g. llmnb,trl_best,loop")
    ap.add_argument("--skip-train", action="store_true"); ap.add_argument("--skip-predict", action="store_true")
    ap.add_argument("--lr", type=float, default=5e-4, help="learning rate (all variants)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="fp32 weights for all; bf16: bf16 autocast for all")
    ap.add_argument("--llmnb-batch", default="4x4", help="llmnb rows per step x accumulation steps (product 16)")
    ap.add_argument("--trl-batch", default="4x4", help="trl_best rows per step x accumulation steps (product 16)")
    ap.add_argument("--checkpointing", action="store_true", help="llmnb: gradient checkpointing")
    ap.add_argument("--compile", action="store_true", help="llmnb: torch.compile")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--predict-batch", type=int, default=16, help="prompts per batch of the pipeline")
    ap.add_argument("--llmnb-predict-batch", type=int, default=None, help="llmnb: fixed prompts per batch (default: its token-budget batching)")
    ap.add_argument("--llama-cpp-type", default="f32", help="GGUF type of the llama_cpp variant (f32: the same weights; f16, q8_0, ...)")
    ap.add_argument("--loop-rows", type=int, default=None, help="loop: only the first N prompts (its prompts/s is compared; text on those N)")
    ap.add_argument("--llama-cpp-slots", type=int, default=32, help="llama_cpp_batched: parallel sequences (llama-server's --parallel)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads in every worker (default: torch's)")
    ap.add_argument("--out", default=str(HERE/"results"/"latest.json"))
    ap.add_argument("--report", metavar="JSON", help="only print the table of a saved results file")
    ap.add_argument("--worker", help=argparse.SUPPRESS); ap.add_argument("--json", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.full: a.rows, a.val_rows, a.predict_rows = 936, 64, 256
    for k in ("llmnb_batch", "trl_batch"):
        bs, gas = map(int, getattr(a, k).lower().split("x"))
        if bs * gas != 16: ap.error(f"--{k.replace('_', '-')}: {bs}x{gas} is not 16 rows per step")
        setattr(a, k, (bs, gas))
    return a

def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    a = parse(argv)
    if a.worker: return worker(a)
    if a.report: return print(report(json.loads(Path(a.report).read_text())))
    a.passthrough = [x for x in argv if x != "--full"] + ["--rows", str(a.rows), "--val-rows", str(a.val_rows), "--predict-rows", str(a.predict_rows)]
    only = set(a.only.split(",")) if a.only else None
    res = dict(settings=dict(rows=a.rows, val_rows=a.val_rows, predict_rows=a.predict_rows, lr=a.lr, precision=a.precision,
                             llmnb_batch=a.llmnb_batch, trl_batch=a.trl_batch, checkpointing=a.checkpointing, compile=a.compile,
                             max_new_tokens=a.max_new_tokens, predict_batch=a.predict_batch, llmnb_predict_batch=a.llmnb_predict_batch, threads=a.threads),
               load_before=os.getloadavg(), train=[], predict=[], started=time.strftime("%Y-%m-%d %H:%M:%S"))
    print(f"bench: load average {os.getloadavg()}", flush=True)
    if not a.skip_train:
        opt_in = CHAT_VARIANTS + ["llmnb_ddp2"]
        for v in TRAIN_VARIANTS + opt_in:
            if (only is None and v not in opt_in) or (only and v in only): res["train"].append(spawn(a, "train", v)); _save(a, res)
    for v in DPO_VARIANTS:
        if only and v in only: res.setdefault("dpo", []).append(spawn(a, "dpo", v)); _save(a, res)
    if not a.skip_predict:
        for v in PREDICT_VARIANTS:
            if only is None or v in only: res["predict"].append(spawn(a, "predict", v)); _save(a, res)
    res["import"] = import_times()
    res["load_after"] = os.getloadavg()
    import platform
    res["machine"] = dict(platform=platform.platform(), cpus=os.cpu_count(), python=platform.python_version())
    txt = report(res)
    print("\n" + txt)
    print(f"\nwrote {_save(a, {**res, 'table': txt})}")
    return res

def _save(a, res):
    "Write the results so far (a killed run keeps what it measured)."
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str))
    return out

if __name__ == "__main__": main()
