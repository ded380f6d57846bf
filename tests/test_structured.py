"""Structured output (`decoder: {type: text_parser, json_schema | regex | grammar}`): every answer of a random-weight model
parses and follows the schema, the parsed fields are prediction columns, and the run saves, reloads and predicts the same."""
import json, re
import jsonschema, pandas as pd, pytest
from llmnb.api import LLM
from llmnb.config import ConfigError, load_config
from llmnb.errors import LlmnbError

SCHEMA = {"type": "object", "properties": {"label": {"enum": ["PERSON", "ORG", "LOC"]}, "ok": {"type": "boolean"},
                                           "word": {"type": "string", "maxLength": 4}},
          "required": ["label", "ok", "word"], "additionalProperties": False}
ROWS = pd.DataFrame(dict(text=[f"row {i}: some text" for i in range(16)]))

def _cfg(base, decoder, **kw):
    return dict(base_model=str(base), input_features=[dict(name="text", type="text")],
                output_features=[dict(name="out", type="text", decoder=dict(type="text_parser", **decoder))],
                **{"generation": dict(max_new_tokens=40), **kw})

def test_json_schema_every_answer_parses(tiny_model_dir):
    df = LLM(_cfg(tiny_model_dir, dict(json_schema=SCHEMA))).predict(ROWS)
    for s in df["out_predictions"]: jsonschema.validate(json.loads(s), SCHEMA)   # 16 of 16 valid, from random weights
    assert df["out_label"].isin(["PERSON", "ORG", "LOC"]).all() and df["out_ok"].isin([True, False]).all()
    assert (df["out_word"].str.len() <= 4).all()
    assert [json.loads(p) for p in df["out_parsed"]] == [json.loads(s) for s in df["out_predictions"]]

def test_unconstrained_random_model_does_not_parse(tiny_model_dir):
    "The control: without text_parser, the same model's answers are not JSON (so the test above can fail)."
    cfg = _cfg(tiny_model_dir, dict(json_schema=SCHEMA)); cfg["output_features"][0].pop("decoder")
    texts = LLM(cfg).predict(ROWS.head(4))["out_predictions"]
    def parses(s):
        try: json.loads(s); return True
        except json.JSONDecodeError: return False
    assert not any(map(parses, texts))

def test_regex_with_named_groups_and_sampling(tiny_model_dir):
    rx = r"(?P<sentiment>positive|negative|neutral) \((?P<score>[1-5])\)"
    df = LLM(_cfg(tiny_model_dir, dict(regex=rx), generation=dict(max_new_tokens=12, do_sample=True, top_k=5, temperature=2.0))).predict(ROWS)
    assert all(re.fullmatch(rx, s) for s in df["out_predictions"])
    assert set(df["out_sentiment"]) <= {"positive", "negative", "neutral"} and set(df["out_score"]) <= set("12345")

def test_grammar_gbnf_and_lark(tiny_model_dir):
    for g in ('root ::= "yes" | "no" | "maybe"', 'start: "yes" | "no" | "maybe"'):
        df = LLM(_cfg(tiny_model_dir, dict(grammar=g))).predict(ROWS.head(6))
        assert set(df["out_predictions"]) <= {"yes", "no", "maybe"}, g

def test_saved_run_predicts_structured(tiny_model_dir, tmp_path):
    cfg = _cfg(tiny_model_dir, dict(json_schema=SCHEMA), adapter=dict(type="lora", r=2),
               trainer=dict(type="finetune", train_steps=1, batch_size=2))
    data = ROWS.assign(out=['{"label":"ORG","ok":true,"word":"ab"}'] * 16)
    LLM(cfg).train(data, output_directory=tmp_path/"r", progress=False)
    df = LLM.load(tmp_path/"r").predict(ROWS.head(4))
    for s in df["out_predictions"]: jsonschema.validate(json.loads(s), SCHEMA)

def test_cut_short_warns_and_errors(tiny_model_dir):
    with pytest.warns(UserWarning, match=r"answers do not parse .*raise generation.max_new_tokens"):
        df = LLM(_cfg(tiny_model_dir, dict(json_schema=SCHEMA), generation=dict(max_new_tokens=2))).predict(ROWS.head(2))
    assert df["out_label"].isna().all()
    with pytest.raises(LlmnbError, match="decoder.grammar: llguidance cannot follow it"):
        LLM(_cfg(tiny_model_dir, dict(grammar="start: ((("))).predict(ROWS.head(1))
    with pytest.raises(ConfigError, match="generation.num_beams: structured output"):
        load_config(_cfg(tiny_model_dir, dict(regex="a+"), generation=dict(num_beams=2)))
