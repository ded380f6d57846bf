"""It learns: DPO and online GRPO on the dates task with the embedded SmolLM2-135M (LoRA), on the CPU.

python bench/align_dates.py dpo|grpo [steps]: held-out preference accuracy and greedy exact match before and after,
as one JSON line. Pairs: llmnb.align.dates_pairs (correct ISO date chosen, a plausible wrong one rejected)."""
import json, sys, time
from llmnb.api import LLM
from llmnb.align import dates_pairs, preference_accuracy

def config(kind: str, steps: int, batch: int = 4, lr: float = 1e-3) -> dict:
    tr = dict(type=kind, train_steps=steps, batch_size=batch, learning_rate=lr, early_stop=-1, trackers=[],
              steps_per_checkpoint=steps, eval_steps=2)
    if kind == "grpo": tr.update(batch_size=4, grpo_num_generations=4, rewards=[dict(type="exact", column="iso")])
    return dict(base_model="smollm2-135m-instruct", input_features=[dict(name="date", type="text")],
                output_features=[dict(name="iso", type="text")], adapter=dict(type="lora", r=16),
                prompt=dict(template="Write this date in ISO format (YYYY-MM-DD): {date}\nISO date:"),
                trainer=tr, generation=dict(max_new_tokens=12, temperature=1.0))

def exact_match(llm, df) -> float:
    p = llm.predict(df[["date"]], generation_config=dict(do_sample=False))
    return float((p["iso_predictions"].str.strip() == df["iso"].values).mean())

def main(kind="dpo", steps=16, n_held=32):
    df = dates_pairs(400 + 8 + n_held, seed=0)
    train, val, held = df[:400], df[400:408], df[408:]
    llm = LLM(config(kind, steps)).load_base()
    before = dict(preference_accuracy=preference_accuracy(llm.model, llm.tokenizer, llm.config, held),
                  exact_match=exact_match(llm, held))
    t0 = time.time()
    st = llm.train(training_set=train, validation_set=val, output_directory=f"runs/align-dates-{kind}", progress=True)
    after = dict(preference_accuracy=preference_accuracy(llm.model, llm.tokenizer, llm.config, held),
                 exact_match=exact_match(llm, held))
    print(json.dumps(dict(kind=kind, mode=st["alignment"]["mode"], steps=st["steps_done"], held_out=len(held),
                          before=before, after=after, train_s=round(time.time() - t0), validation=st["validation"])))

if __name__ == "__main__": main(sys.argv[1] if len(sys.argv) > 1 else "dpo", int(sys.argv[2]) if len(sys.argv) > 2 else 16)
