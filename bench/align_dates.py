"""It learns: DPO and online GRPO on the dates task with the embedded SmolLM2-135M (LoRA), on the CPU.

python bench/align_dates.py dpo|grpo [steps] [lr]: one JSON line with the held-out figures before and after training.

Hard pairs: the chosen answer is the correct ISO date; the rejected one is the base model's OWN wrong greedy answer to
the same prompt (rows it already gets right give no pair). So the base model prefers the rejected answer by
construction, and preference accuracy starts low. Training pairs come from the first rows of `dates_pairs`, the
held-out ones from the last `n_held` rows (never trained on). Before/after: held-out preference accuracy (summed
answer log-probs, the base's mistakes as the rejections), greedy exact match on every held-out row, and the mean
exact-match reward of 4 sampled answers per held-out prompt (temperature 1.0), the reward GRPO trains on.
"""
import json, os, sys, time
import pandas as pd
from llmnb.api import LLM
from llmnb.align import dates_pairs, mistake_pairs, preference_accuracy

TEMPLATE = "Write this date in ISO format (YYYY-MM-DD): {date}\nISO date:"

def config(kind: str, steps: int, lr: float, batch: int = 4) -> dict:
    tr = dict(type=kind, train_steps=steps, batch_size=batch, learning_rate=lr, early_stop=-1, trackers=[],
              steps_per_checkpoint=steps, eval_steps=steps, seed=0)
    if kind == "grpo": tr.update(grpo_num_generations=4, rewards=[dict(type="exact", column="iso")])
    base = os.environ.get("ALIGN_BASE", "smollm2-135m-instruct")   # ALIGN_BASE: another model folder (a smoke test)
    return dict(base_model=base, input_features=[dict(name="date", type="text")],
                output_features=[dict(name="iso", type="text")], adapter=dict(type="lora", r=16),
                prompt=dict(template=TEMPLATE), trainer=tr,
                generation=dict(max_new_tokens=12, temperature=1.0))

def greedy(llm, df) -> pd.Series:
    return llm.predict(df[["date"]], generation_config=dict(do_sample=False))["iso_predictions"].str.strip()

def base_answers(llm, df) -> pd.Series:
    "The base model's greedy answers to `df` (cached under runs/: the DPO and GRPO runs share them)."
    path = "runs/align-dates-base-%s.csv" % os.path.basename(str(llm.config.base_model).rstrip("/"))
    if os.path.exists(path):
        c = pd.read_csv(path, dtype=str, keep_default_na=False)
        if c["date"].tolist() == df["date"].tolist(): return c["greedy"]
    p = greedy(llm, df)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    df[["date"]].assign(greedy=p.values).to_csv(path + ".tmp", index=False); os.replace(path + ".tmp", path)
    return p

def sampled_reward(llm, df, n: int = 4) -> float:
    "Mean exact-match reward of `n` sampled answers (temperature 1.0) per row."
    rep = pd.concat([df] * n, ignore_index=True)
    p = llm.predict(rep[["date"]], generation_config=dict(do_sample=True, temperature=1.0))["iso_predictions"]
    return float((p.str.strip().values == rep["iso"].values).mean())

def scores(llm, held, held_pairs, kind, answers=None) -> dict:
    g = greedy(llm, held) if answers is None else answers
    out = dict(preference_accuracy=round(preference_accuracy(llm.model, llm.tokenizer, llm.config, held_pairs), 4),
               exact_match=round(float((g.values == held["iso"].values).mean()), 4))
    if kind == "grpo": out["sampled_reward"] = round(sampled_reward(llm, held), 4)
    return out

def main(kind="dpo", steps=16, lr=5e-4, n_train=160, n_held=48):
    import torch
    torch.manual_seed(0)
    df = dates_pairs(n_train + n_held, seed=0).drop(columns="rejected")
    llm = LLM(config(kind, steps, lr)).load_base()
    t0 = time.time()
    base = base_answers(llm, df)
    train, held = df[:n_train].reset_index(drop=True), df[n_train:].reset_index(drop=True)
    train_pairs, held_pairs = mistake_pairs(train, base[:n_train]), mistake_pairs(held, base[n_train:])
    before = scores(llm, held, held_pairs, kind, base[n_train:].reset_index(drop=True))
    t1 = time.time()
    data = train_pairs if kind == "dpo" else train
    st = llm.train(training_set=data[8:], validation_set=data[:8], output_directory=f"runs/align-dates-{kind}",
                   progress=False)
    t2 = time.time()
    after = scores(llm, held, held_pairs, kind)
    print(json.dumps(dict(kind=kind, mode=st["alignment"]["mode"], steps=st["steps_done"], lr=lr,
                          train_pairs=len(train_pairs), held_out=len(held), held_out_pairs=len(held_pairs),
                          before=before, after=after, pairs_s=round(t1 - t0), train_s=round(t2 - t1),
                          validation={k: v[-1:] for k, v in st["validation"].items()})))

if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0] if a else "dpo", int(a[1]) if len(a) > 1 else 16, float(a[2]) if len(a) > 2 else 5e-4)
