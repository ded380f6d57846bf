"Conversations (llmnb.chat): exact assistant masks on four template families, the readers, truncation by whole turns, training and prediction."
import json, subprocess, sys, os
import pytest
import pandas as pd
from datasets import Dataset
from transformers import AutoTokenizer
from llmnb.config import load_config
from llmnb.data import load_splits, DataError
from llmnb.chat import encode_conversation, assistant_spans, encode_chat_prompts, ChatError
from llmnb.train import pack_batch, pad_batch
from llmnb.tokens import tokenize_dataset, Limits, tokenize_rows
from chat_templates import family_tokenizer

S = dict(role="system", content="Be brief.")
CHAT = [S, dict(role="user", content="Capital of France?"), dict(role="assistant", content="Paris."),
        dict(role="user", content="And of Italy?"), dict(role="assistant", content="Rome.")]
# what each family trains on: the content and its end-of-turn token, never the header or the newline after
EXPECTED = dict(chatml=["Paris.<|im_end|>", "Rome.<|im_end|>"], llama3=["Paris.<|eot_id|>", "Rome.<|eot_id|>"],
                mistral=[" Paris.</s>", " Rome.</s>"], gemma3=["Paris.<end_of_turn>", "Rome.<end_of_turn>"])

@pytest.fixture(scope="module")
def tok(embedded_dir): return AutoTokenizer.from_pretrained(embedded_dir)

def _tok(tok, family): return tok if family == "chatml" else family_tokenizer(tok, family)

@pytest.mark.parametrize("family", list(EXPECTED))
def test_masks_exact(tok, family):
    t = _tok(tok, family)
    ids, spans = assistant_spans(t, CHAT)
    assert ids == t(t.apply_chat_template(CHAT, tokenize=False), add_special_tokens=False)["input_ids"]
    assert [t.decode(ids[s:e]) for s, e in spans] == EXPECTED[family]
    ids, mask = encode_conversation(t, CHAT, "last_assistant")
    assert t.decode([i for i, m in zip(ids, mask) if m]) == EXPECTED[family][1]
    one = CHAT[1:3]  # no system turn, one exchange
    ids, mask = encode_conversation(t, one)
    assert t.decode([i for i, m in zip(ids, mask) if m]) == EXPECTED[family][0]

@pytest.mark.parametrize("family", list(EXPECTED))
def test_inference_prompt_is_training_prefix(tok, family):
    "The tokens predict gives the model are the tokens training put before the last answer (or the template's own prefix)."
    t = _tok(tok, family)
    cfg = load_config(_cfg())
    ids, _ = encode_chat_prompts([CHAT], t, cfg, Limits())
    assert t.decode(ids[0]) == t.apply_chat_template(CHAT[:-1], tokenize=False, add_generation_prompt=True)

def test_generation_markers_agree_with_diffing(tok):
    t = family_tokenizer(tok, "llama3")
    t.chat_template = t.chat_template.replace(
        "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
        "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}",
        "{% if loop.index0 == 0 %}{{ bos_token }}{% endif %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
        "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] | trim + '<|eot_id|>' }}{% endgeneration %}"
        "{% else %}{{ message['content'] | trim + '<|eot_id|>' }}{% endif %}")
    plain = family_tokenizer(tok, "llama3")
    assert "generation" in t.chat_template
    assert encode_conversation(t, CHAT) == encode_conversation(plain, CHAT)

def _cfg(**pre):
    return dict(base_model="smollm2-135m-instruct", output_features=[dict(name="reply", type="text")],
                input_features=[dict(name="messages", type="text", preprocessing=dict(format="chat", **pre))],
                preprocessing=dict(split=dict(type="fixed")))

SHAREGPT = [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Capital of France?"}, {"from": "gpt", "value": "Paris."}]

@pytest.mark.parametrize("fmt", ["json", "jsonl", "parquet", "dataset"])
def test_readers(tmp_path, fmt):
    rows = [dict(messages=CHAT, split=0), dict(messages=CHAT[:3], split=0)]
    sg = [dict(messages=SHAREGPT, split=0)] * 2
    for name, data in (("openai", rows), ("sharegpt", sg)):
        df = pd.DataFrame(data)
        p = tmp_path / f"{name}.{fmt}"
        if fmt == "json": p.write_text(json.dumps(data))
        elif fmt == "jsonl": p.write_text("\n".join(json.dumps(r) for r in data))
        elif fmt == "parquet": df.to_parquet(p)
        src = Dataset.from_list(data) if fmt == "dataset" else str(p)
        dd, rep = load_splits(load_config(_cfg()), src)
        assert dd["train"][0]["messages"][0] == {"role": "system", "content": "Be brief."}
        assert [m["role"] for m in dd["train"][0]["messages"]][-1] == "assistant"

@pytest.mark.parametrize("turns,msg", [
    ([dict(role="user", content="Hi"), dict(role="bot", content="x")], "train split, row 1, turn 1: unknown role 'bot'"),
    ([S, dict(role="user", content="Hi"), S, dict(role="assistant", content="x")], "train split, row 1, turn 2: a system turn after turn 0"),
    ([dict(role="user", content="Hi")], "train split, row 1, turn 0: the conversation ends on a user turn"),
    ([dict(role="user", content="Hi"), dict(role="assistant", content="")], "train split, row 1, turn 1: empty content"),
])
def test_bad_turns_named(turns, msg):
    with pytest.raises(ChatError, match=None) as e: load_splits(load_config(_cfg()), [dict(messages=CHAT, split=0), dict(messages=turns, split=0)])
    assert msg in str(e.value)

def test_list_column_not_stringified():
    cfg = load_config({**_cfg(), "input_features": [dict(name="messages", type="text")]})
    with pytest.raises(DataError, match="holds lists"): load_splits(cfg, [dict(messages=CHAT, reply="x", split=0)])
    from llmnb.prompt import render_prompts
    with pytest.raises(DataError, match="format: chat"): render_prompts(Dataset.from_list([dict(messages=CHAT)]), cfg)

def test_truncation_whole_turns(tok):
    long = CHAT + [dict(role="user", content="And of Spain?"), dict(role="assistant", content="Madrid.")]
    cfg = load_config(_cfg())
    full = len(encode_conversation(tok, long)[0])
    rows, rep = tokenize_dataset(Dataset.from_list([dict(messages=long)] * 3), tok, cfg, Limits(total=full - 1))
    text = tok.decode(rows[0]["input_ids"])
    assert text.startswith("<|im_start|>system\nBe brief.") and "France" not in text and "Italy" in text and "Madrid." in text
    assert (rep.rows, rep.turn_rows, rep.turns_dropped, rep.dropped_rows) == (3, 3, 6, 0)
    rows, rep = tokenize_dataset(Dataset.from_list([dict(messages=long)]), tok, cfg, Limits(total=10))
    assert len(rows) == 0 and rep.dropped_rows == 1
    assert "1 conversations dropped" in str(rep)

def test_single_turn_rows_unchanged(tok, embedded_dir):
    "Rows without a label mask are labelled as before; a conversation's mask gives its own labels."
    cfg = load_config(dict(base_model="smollm2-135m-instruct", input_features=[dict(name="q", type="text")], output_features=[dict(name="a", type="text")]))
    out = tokenize_rows(["What is 2+2?", "Capital of France?"], ["4", "Paris"], tok, cfg, Limits())
    rows = [dict(input_ids=i, n_prompt=n) for i, n in zip(out["input_ids"], out["n_prompt"])]
    old = [[-100] * r["n_prompt"] + r["input_ids"][r["n_prompt"]:] for r in rows]
    assert pack_batch(rows)["labels"][0].tolist() == old[0] + old[1]
    assert pad_batch(rows, 0)["labels"][1].tolist()[:len(old[1])] == old[1]
    ids, mask = encode_conversation(tok, CHAT)
    lab = pack_batch([dict(input_ids=ids, n_prompt=len(ids) - sum(mask), label_mask=mask)])["labels"][0].tolist()
    assert tok.decode([l for l in lab if l != -100]) == "Paris.<|im_end|>Rome.<|im_end|>"

def test_train_save_load_predict_fresh_process(tmp_path, tiny_model_dir):
    from llmnb.api import LLM
    cfg = {**_cfg(), "base_model": str(tiny_model_dir), "adapter": {"type": "lora"},
           "trainer": {"type": "finetune", "epochs": 1, "batch_size": 2, "learning_rate": 0.001}}
    cfg["preprocessing"] = dict(split=dict(type="random", probabilities=[0.8, 0.2, 0.0]))
    data = tmp_path / "chats.jsonl"
    data.write_text("\n".join(json.dumps(dict(messages=CHAT)) for _ in range(10)))
    stats = LLM(cfg).train(str(data), output_directory=str(tmp_path / "run"), progress=False)
    assert stats["truncation"]["rows"] == 8 and stats["truncation"]["turn_rows"] == 0
    test = tmp_path / "test.jsonl"
    test.write_text("\n".join(json.dumps(dict(messages=CHAT[:4])) for _ in range(2)))
    code = (f"from llmnb.api import LLM; llm = LLM.load({str(tmp_path / 'run')!r}); "
            f"df = llm.predict({str(test)!r}, output_directory={str(tmp_path / 'out')!r}, generation_config=dict(max_new_tokens=4)); "
            f"m, _ = llm.evaluate({str(data)!r}, generation_config=dict(max_new_tokens=4)); print('rows', m['rows'], len(df))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "rows 10 2" in r.stdout
    df = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert list(df.columns)[0] == "reply_predictions" and len(df) == 2

def test_tool_turns_kept_as_text(tok):
    turns = [dict(role="user", content="Weather in Paris?"), dict(role="assistant", content="Checking."),
             dict(role="tool", content='{"temp": 21}'), dict(role="assistant", content="21 degrees.")]
    ids, mask = encode_conversation(tok, turns)
    assert '<|im_start|>tool\n{"temp": 21}<|im_end|>' in tok.decode(ids)
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == "Checking.<|im_end|>21 degrees.<|im_end|>"

def test_lengths_and_decoding_on_conversations(tmp_path, tok, tiny_model_dir):
    from llmnb.tokens import length_stats, token_lengths
    from llmnb.widgets import compare_decoding
    from llmnb.api import LLM
    cfg = {**_cfg(), "base_model": str(tiny_model_dir)}
    df = token_lengths(load_config(cfg), tok, [dict(messages=CHAT)])
    ids, mask = encode_conversation(tok, CHAT)
    assert df.iloc[0].tolist() == [len(ids) - sum(mask), sum(mask), len(ids)]
    assert length_stats(cfg, [dict(messages=CHAT)] * 3, tok=tok, context_length=512).lengths["total"].tolist() == [len(ids)] * 3
    llm = LLM({**cfg, "trainer": {"type": "none"}})
    t = compare_decoding(llm, [dict(messages=CHAT[:4])], {"greedy": dict(max_new_tokens=3), "beam": dict(num_beams=2, max_new_tokens=3)})
    assert t["prompt"][0].endswith("And of Italy?<|im_end|>\n<|im_start|>assistant\n") and t["greedy: tokens"][0] <= 3
    with pytest.raises(DataError, match="ends on a user turn"): llm.evaluate([dict(messages=CHAT[:4])])

def test_retrieval_on_conversations_train_save_load_predict(tmp_path, tiny_model_dir):
    "Few-shot exchanges retrieved by the last user turn: inserted after the system turn, never the row itself, saved with the run."
    from llmnb.api import LLM
    from llmnb.data import PROMPT
    qa = [(f"Capital number {i}?", f"City{i}.") for i in range(6)]
    rows = [dict(messages=[S, dict(role="user", content=q), dict(role="assistant", content=a)]) for q, a in qa]
    cfg = {**_cfg(), "base_model": str(tiny_model_dir), "adapter": {"type": "lora"}, "prompt": {"retrieval": {"type": "random", "k": 2}},
           "preprocessing": {"split": {"type": "random", "probabilities": [1.0, 0.0, 0.0]}},
           "trainer": {"type": "finetune", "epochs": 1, "batch_size": 2, "learning_rate": 0.001}}
    llm = LLM(cfg)
    llm.train(pd.DataFrame(rows), output_directory=str(tmp_path / "run"), progress=False)
    assert (tmp_path / "run" / "model" / "retrieval").is_dir()
    d = llm._as_dataset(pd.DataFrame(rows))
    for i, p in enumerate(llm._render(d, d)[PROMPT]):   # two other rows' exchanges, after the system turn, before the row's own question
        assert p.count("<|im_start|>user") == 3 and p.index("Be brief.") < p.index("City") and f"City{i}." not in p
    back = LLM.load(tmp_path / "run")
    new = back._render(back._as_dataset(pd.DataFrame(dict(messages=[[S, dict(role="user", content="Capital number 9?")]]))))
    p = new[PROMPT][0]
    assert p.count("<|im_start|>user") == 3 and p.count("<|im_start|>assistant") == 3 and p.rstrip().endswith("<|im_start|>assistant")
    assert sum(f"City{i}." in p for i in range(6)) == 2
    assert len(back.predict(pd.DataFrame(dict(messages=[[S, dict(role="user", content="Capital number 9?")]])), generation_config=dict(max_new_tokens=2))) == 1
