"""One config of each kind, in Ludwig's spelling, through the CLI on the embedded SmolLM2-135M: `llmnb train` or
`experiment`, then `llmnb predict` on the saved run (a few rows, a step or two each). Run with `pytest --slow`."""
import json, re
from pathlib import Path
import pandas as pd
import pytest, yaml
from llmnb.cli import main

BASE = "smollm2-135m-instruct"
TEXT = dict(input_features=[dict(name="question", type="text")], output_features=[dict(name="answer", type="text")],
            prompt=dict(template="Q: {question}\nA:"), generation=dict(max_new_tokens=4))
ROWS = pd.DataFrame(dict(question=[f"What is {i} plus {i}?" for i in range(8)], answer=[str(2 * i) for i in range(8)]))
REVIEWS = pd.DataFrame(dict(review=["I loved it", "Awful, broke at once", "It is fine", "Best I ever bought",
                                    "Never again", "Works as described"] * 2,
                            label=["positive", "negative", "neutral", "positive", "negative", "neutral"] * 2))
CATEGORY = dict(input_features=[dict(name="review", type="text")],
                output_features=[dict(name="label", type="category", preprocessing=dict(vocab=["positive", "negative", "neutral"]))],
                prompt=dict(task="Classify the sentiment of the review as positive, negative or neutral."))
STEP = dict(type="finetune", train_steps=1, batch_size=2)
RX = "(?P<sign>plus|minus) (?P<digit>[0-9])"

def _run(tmp_path, name, config, data, verb="train"):
    "Write the config and data, `llmnb <verb>` into RUN, then `llmnb predict` from it; the predictions."
    cfg, csv = tmp_path/f"{name}.yaml", tmp_path/f"{name}.csv"
    cfg.write_text(yaml.safe_dump({"model_type": "llm", "base_model": BASE, **config})); data.to_csv(csv, index=False)
    run = tmp_path/name
    main([verb, "--config", str(cfg), "--dataset", str(csv), "--output_directory", str(run), "-l", "error"])
    main(["predict", "--model_path", str(run), "--dataset", str(csv), "--output_directory", str(tmp_path/f"{name}_pred")])
    pred = pd.read_parquet(tmp_path/f"{name}_pred"/"predictions.parquet")
    assert len(pred) == len(data)
    return run, pred

KINDS = {
    "text_finetune": (dict(**TEXT, adapter=dict(type="lora", r=4), trainer=STEP), ROWS, "experiment"),
    "category_zero_shot": (CATEGORY, REVIEWS, "train"),
    "few_shot": (dict(CATEGORY, prompt=dict(CATEGORY["prompt"], retrieval=dict(type="random", k=2))), REVIEWS, "train"),
    "qlora": (dict(**TEXT, quantization=dict(bits=4), adapter=dict(type="lora", r=4), trainer=STEP), ROWS, "train"),
    "generation_settings": (dict(**{**TEXT, "generation": dict(max_new_tokens=5, do_sample=True, temperature=0.7, top_k=5,
                                                                 repetition_penalty=1.2)}), ROWS, "train"),
    "new_adapter": (dict(**TEXT, adapter=dict(type="oft", oft_block_size=8, target_modules=["q_proj", "v_proj"]), trainer=STEP),
                    ROWS, "experiment"),
}

@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_kind_trains_and_predicts(kind, tmp_path):
    config, data, verb = KINDS[kind]
    run, pred = _run(tmp_path, kind, config, data, verb)
    col = config["output_features"][0]["name"]
    assert pred[f"{col}_predictions"].notna().all()
    if config["output_features"][0]["type"] == "category": assert set(pred[f"{col}_predictions"]) <= {"positive", "negative", "neutral", ""}
    assert (run/"model"/"model_hyperparameters.json").exists()

@pytest.mark.slow
def test_multi_adapter_merge_trains_and_predicts(tmp_path):
    lora = dict(type="lora", r=4, target_modules=["q_proj", "v_proj"])
    first, _ = _run(tmp_path, "first", dict(**TEXT, adapters=dict(adapters=dict(sums=lora)), trainer=STEP), ROWS)
    both = dict(adapters=dict(sums=dict(lora, pretrained_adapter_weights=str(first)), more=lora), active="more",
                merge=dict(name="merged", combination_type="ties", density=0.5))
    run, pred = _run(tmp_path, "merge", dict(**TEXT, adapters=both, trainer=STEP), ROWS, "experiment")
    assert {p.name for p in (run/"model").iterdir() if (p/"adapter_config.json").exists()} == {"sums", "more", "merged"}
    use = dict(adapters={n: dict(lora, pretrained_adapter_weights=str(run)) for n in ("sums", "more")}, active="merged",
               merge=dict(name="merged", combination_type="ties", density=0.5))
    _, merged = _run(tmp_path, "use_merged", dict(**TEXT, adapters=use), ROWS)   # trainer none: predict with the merge
    assert merged["answer_predictions"].notna().all()

@pytest.mark.slow
def test_structured_output_trains_and_predicts(tmp_path):
    out = dict(name="answer", type="text", decoder=dict(type="text_parser", regex=RX))
    data = ROWS.assign(answer=[f"plus {i % 10}" for i in range(8)])
    _, pred = _run(tmp_path, "structured", dict(TEXT, output_features=[out], adapter=dict(type="lora", r=4), trainer=STEP), data)
    assert all(re.fullmatch(RX, s) for s in pred["answer_predictions"])
    assert set(pred["answer_sign"]) <= {"plus", "minus"}
