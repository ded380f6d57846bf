"""A run Ludwig saved (RUN/model/model_hyperparameters.json + RUN/model/model_weights/, written here with PEFT as Ludwig's
LLM.save does) loads with LLM.load and predicts, in Python and through `llmnb predict`; llmnb runs carry Ludwig's file."""
import json
from pathlib import Path
import pandas as pd
import pytest, torch, yaml
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM
from llmnb.api import LLM
from llmnb.cli import main

HERE = Path(__file__).parent/"ludwig_configs"

def ludwig_run(tmp_path, base, rendered="render_config_llama2_4bit_lora.yaml"):
    "Ludwig's layout: a rendered config (as Ludwig writes model_hyperparameters.json) and a PEFT save in model_weights/."
    cfg = yaml.safe_load((HERE/rendered).read_text())
    cfg.update(base_model=str(base), quantization=None)
    cfg["prompt"]["template"] = "Q: {instruction}\nA:"
    cfg["generation"]["max_new_tokens"] = 3
    run = tmp_path/"results"/"experiment_run"; (run/"model").mkdir(parents=True)
    (run/"model"/"model_hyperparameters.json").write_text(json.dumps(cfg))
    torch.manual_seed(1)
    m = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    m.save_pretrained(run/"model"/"model_weights")
    return run, m

def test_ludwig_lora_run_loads_and_predicts(tiny_model_dir, tmp_path):
    run, peft_model = ludwig_run(tmp_path, tiny_model_dir)
    llm = LLM.load(run)
    assert llm.kind == "adapter" and hasattr(llm.model, "peft_config")
    saved = dict(peft_model.named_parameters()); got = dict(llm.model.named_parameters())
    names = [n for n in saved if "lora_B" in n]
    assert names and all(torch.equal(saved[n].detach().cpu(), got[n].detach().cpu()) for n in names)
    rows = pd.DataFrame(dict(instruction=["What is 2 plus 2?", "Name a colour."]))
    pred = llm.predict(rows)
    assert len(pred) == 2 and "output_predictions" in pred
    x = torch.tensor([[1, 5, 7]])
    with torch.no_grad():
        torch.testing.assert_close(llm.model.eval()(input_ids=x.to(llm.model.device)).logits.float().cpu(), peft_model.eval()(input_ids=x).logits)
    data = tmp_path/"d.csv"; rows.to_csv(data, index=False)
    main(["predict", "-m", str(run), "--dataset", str(data), "-od", str(tmp_path/"pred")])
    assert len(pd.read_parquet(tmp_path/"pred"/"predictions.parquet")) == 2

def test_llmnb_run_has_ludwig_hyperparameters(tiny_model_dir, tmp_path):
    cfg = dict(base_model=str(tiny_model_dir), input_features=[dict(name="q", type="text")], output_features=[dict(name="a", type="text")],
               adapter=dict(type="lora", r=2), trainer=dict(type="finetune", train_steps=1, batch_size=2))
    LLM(cfg).train(pd.DataFrame(dict(q=["a", "b", "c", "d"], a=["1", "2", "3", "4"])), output_directory=tmp_path/"r", progress=False)
    hp = json.loads((tmp_path/"r"/"model"/"model_hyperparameters.json").read_text())
    assert hp["adapter"]["r"] == 2 and hp["base_model"] == str(tiny_model_dir)
    assert LLM.load(tmp_path/"r").kind == "adapter"   # an llmnb run still loads as llmnb's (llmnb.json wins)

def test_typod_match_label_is_an_error_before_work(tiny_model_dir, tmp_path):
    "Ludwig's examples/llm_few_shot_learning config has the label 'neural' for 'neutral'."
    from llmnb.data import DataError
    cfg = yaml.safe_load((HERE/"ex_llm_few_shot.yaml").read_text())
    cfg.update(base_model=str(tiny_model_dir), preprocessing={"split": {"type": "random", "probabilities": [0.5, 0.5, 0.0]}})
    cfg["prompt"]["retrieval"] = {"type": "random", "k": 1}
    rows = pd.DataFrame(dict(review=["good", "bad", "meh", "great"], label=["positive", "negative", "neutral", "positive"]))
    with pytest.raises(DataError, match="'neural' is not a label of the training data"):
        LLM(cfg).train(rows, output_directory=tmp_path/"r", progress=False)
    assert not (tmp_path/"r"/"model").exists()


def test_run_writes_ludwig_training_statistics(tiny_model_dir, tmp_path):
    "train/experiment write llmnb's statistics and Ludwig's training_statistics.json (split → feature → metric → values)."
    cfg = dict(base_model=str(tiny_model_dir), input_features=[dict(name="q", type="text")], output_features=[dict(name="ans", type="text")],
               adapter=dict(type="lora", r=2), trainer=dict(type="finetune", epochs=2, batch_size=2),
               preprocessing=dict(split=dict(type="random", probabilities=[0.6, 0.2, 0.2])))
    rows = pd.DataFrame(dict(q=[f"{i}?" for i in range(20)], ans=[str(i) for i in range(20)]))
    LLM(cfg).train(rows, output_directory=tmp_path/"r", progress=False)
    own = json.loads((tmp_path/"r"/"llmnb_statistics.json").read_text())
    lud = json.loads((tmp_path/"r"/"training_statistics.json").read_text())
    assert set(lud) == {"training", "validation", "test", "evaluation_frequency"}
    assert lud["evaluation_frequency"] == {"frequency": 1.0, "period": "epoch"}
    assert lud["training"]["ans"]["loss"] == own["train"]["loss"] == lud["training"]["combined"]["loss"] and len(own["train"]["loss"]) == 2
    assert lud["validation"]["ans"]["perplexity"] == own["validation"]["perplexity"]
    assert lud["test"]["ans"]["loss"] == [own["test"]["loss"]]
    assert not [p for p in (tmp_path/"r").iterdir() if ".tmp." in p.name]


def test_cli_experiment_writes_both_statistics(tiny_model_dir, tmp_path, monkeypatch):
    cfg = dict(base_model=str(tiny_model_dir), input_features=[dict(name="q", type="text")], output_features=[dict(name="ans", type="text")],
               adapter=dict(type="lora", r=2), trainer=dict(type="finetune", train_steps=2, batch_size=2), generation=dict(max_new_tokens=2))
    (tmp_path/"c.yaml").write_text(yaml.safe_dump(cfg))
    pd.DataFrame(dict(q=[f"{i}?" for i in range(10)], ans=[str(i) for i in range(10)])).to_csv(tmp_path/"d.csv", index=False)
    monkeypatch.chdir(tmp_path)
    assert main(["experiment", "-c", "c.yaml", "--dataset", "d.csv", "-od", "run"]) in (0, None)
    lud = json.loads((tmp_path/"run"/"training_statistics.json").read_text())
    assert "ans" in lud["training"] and "loss" in lud["training"]["ans"]
    assert (tmp_path/"run"/"llmnb_statistics.json").exists() and (tmp_path/"run"/"test_statistics.json").exists()
