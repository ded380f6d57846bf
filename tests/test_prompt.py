"Dense checks of `llmnb.prompt`: template parsing, the reference's prompt cases, raw rendering, and speed."
import math, random, re, time

import datasets
import pytest
from datasets import Dataset, DatasetDict

from llmnb.config import load_config, template_fields
from llmnb.data import CONTEXT, PROMPT, DataError, load_splits
from llmnb.prompt import (DEFAULT_FEW_SHOT_TEMPLATE, DEFAULT_ZERO_SHOT_TEMPLATE, TemplateError, check_prompt_columns,
                          parse_template, prompt_template, render_prompt, render_prompts)

datasets.disable_progress_bars()
BASE = "hf-internal-testing/tiny-random-GPTJForCausalLM"


def make_cfg(prompt=None, inp=None, out=None):
    return load_config({"model_type": "llm", "base_model": BASE,
                        "input_features": [{"name": "text", "type": "text", **(inp or {})}],
                        "output_features": [{"name": "label", "type": "text", **(out or {})}],
                        **({"prompt": prompt} if prompt else {})})


# ---------------------------------------------------------------- template_fields

@pytest.mark.parametrize("template,fields", [
    ("{a}", ["a"]), ("x {a} {b} {a}", ["a", "b"]), ("{{a}} {b}", ["b"]), ("{{}}", []), ("plain", []),
    ("{year:.2f}", ["year"]), ("{year:>10.1f} {year}", ["year"]), ("{__sample__}{__task__}{__context__}", ["__sample__", "__task__", "__context__"]),
    ("{col with space}", ["col with space"]), ("{ünï}", ["ünï"]),
])
def test_template_fields(template, fields):
    assert template_fields(template) == fields


@pytest.mark.parametrize("template,msg", [
    ("{col.__class__}", "{col.__class__} uses attribute or index access"),
    ("{col.__class__.__mro__}", "attribute or index access"),
    ("{col[0]}", "{col[0]} uses attribute or index access"),
    ("{__sample__.__globals__}", "attribute or index access"),
    ("{}", "positional field {}"), ("{0}", "positional field {0}"), ("{ a }", "{ a } is not a column name"),
    ('Return JSON like {"label": "x"}', "double the braces"),
    ("{a:>10}", "{a:>10} has an unsupported format spec"), ("{a:d}", "{a:d} has an unsupported format spec"),
    ("{a:{w}f}", "unsupported format spec"), ("{a:ff}", "invalid float format spec"), ("{a!r}", "uses a conversion"),
    ("{a", "unclosed '{' at position 0"), ("a}", "single '}' at position 1"), ("{a}}", "single '}' at position 3"),
])
def test_template_errors(template, msg):
    "One set of rules (llmnb.config.template_fields): the config refuses these as it loads; rendering refuses them too."
    with pytest.raises(ValueError) as e:
        template_fields(template)
    assert msg in str(e.value)
    with pytest.raises(TemplateError) as e:
        parse_template(template)
    assert msg in str(e.value) and str(e.value).startswith("prompt.template: ")
    with pytest.raises(ValueError, match=re.escape(msg)):
        make_cfg({"template": template})


def test_one_template_fields():
    import llmnb.config, llmnb.prompt, llmnb.retrieval
    assert llmnb.prompt.template_fields is llmnb.config.template_fields is llmnb.retrieval.template_fields


def test_no_code_runs():
    "Attribute access is rejected before any value is looked up, so even a real object's attributes are never read."
    class Spy:
        def __getattr__(self, k): raise AssertionError("attribute read")
        def __format__(self, spec): raise AssertionError("formatted")
    with pytest.raises(ValueError, match="attribute or index access"):  # the config rejects it as it loads
        make_cfg({"template": "{text.__class__}"})
    cfg = make_cfg({"template": "{text}"})
    cfg = cfg.model_copy(update={"prompt": cfg.prompt.model_copy(update={"template": "{text.__class__}"})})  # skip validation
    with pytest.raises(TemplateError, match="attribute or index access"):
        render_prompt(cfg, {"text": Spy()})


# ---------------------------------------------------------------- effective template

def test_prompt_template_defaults():
    assert prompt_template(make_cfg()) is None
    assert prompt_template(make_cfg({"task": "t"})) == DEFAULT_ZERO_SHOT_TEMPLATE
    assert prompt_template(make_cfg({"task": "t", "retrieval": {"type": "random", "k": 2}})) == DEFAULT_FEW_SHOT_TEMPLATE
    assert prompt_template(make_cfg({"template": "{__task__}: {text}", "task": "t"})) == "{__task__}: {text}"
    # the layout of spec §1.3: three blocks separated by blank lines, context block first for few-shot
    assert DEFAULT_ZERO_SHOT_TEMPLATE.split("\n\n") == ["SAMPLE INPUT: {__sample__}", "USER: Complete the following task: {__task__}", "ASSISTANT:\n"]
    assert DEFAULT_FEW_SHOT_TEMPLATE.startswith("Below is relevant context:\n\nCONTEXT: {__context__}\n\n")
    assert DEFAULT_FEW_SHOT_TEMPLATE.endswith(DEFAULT_ZERO_SHOT_TEMPLATE)


# ---------------------------------------------------------------- A7

A7_COLS = ["input1", "output1"]

def a7(**prompt):
    return load_config({"base_model": BASE, "input_features": [{"name": "input1", "type": "text"}],
                        "output_features": [{"name": "output1", "type": "text"}], "prompt": prompt})

@pytest.mark.parametrize("prompt,ok", [
    ({}, True), ({"task": "Classify"}, True), ({"task": "Classify", "template": "{input1}"}, False),
    ({"task": "Classify", "template": "{__invalid__}"}, False), ({"task": "Classify", "template": "{__task__}"}, True),
    ({"template": "{input1}"}, True), ({"template": "{input1}: {output1}"}, False),
])
def test_a7_prompt_sequence(prompt, ok):
    "Spec A7. `{__task__}` alone is accepted by the config; with data it renders every row the same, so it needs a column."
    def run():
        cfg = a7(**prompt)
        if prompt.get("template") == "{__task__}": return prompt_template(cfg)
        return check_prompt_columns(cfg, A7_COLS)
    if ok: run()
    else:
        with pytest.raises(ValueError): run()


def test_task_only_template_with_data_is_rejected():
    with pytest.raises(TemplateError, match="every row would get the same prompt"):
        check_prompt_columns(a7(task="Classify", template="{__task__}"), A7_COLS)


# ---------------------------------------------------------------- column checks (W-U2)

def test_missing_column_message():
    with pytest.raises(DataError) as e:
        check_prompt_columns(make_cfg({"template": "Q: {qestion} C: {context_text}"}), ["question", "context", "label"])
    msg = str(e.value)
    assert "'qestion', 'context_text'" in msg and "Columns that exist: 'question', 'context', 'label'" in msg
    assert "Did you mean 'question' for 'qestion'?" in msg and "Did you mean 'context' for 'context_text'?" in msg


def test_sample_needs_input_column_but_template_columns_do_not():
    cfg = make_cfg({"template": "{__sample__}!"}, inp={"name": "question"})
    with pytest.raises(DataError, match="uses {__sample__}.*input feature 'question'.*no column 'question'.*Did you mean 'questions'"):
        check_prompt_columns(cfg, ["questions", "label"])
    check_prompt_columns(make_cfg({"template": "{q}!"}, inp={"name": "question"}), ["q", "label"])  # A17: no `question` column


def test_no_template_needs_input_column():
    with pytest.raises(DataError, match="no prompt template.*'text'.*Did you mean 'Text'"):
        check_prompt_columns(make_cfg(), ["Text", "label"])


def test_input_column_option():
    cfg = make_cfg({"template": "<{__sample__}>"}, inp={"name": "question", "column": "q"})
    assert render_prompt(cfg, {"q": "hi"}) == "<hi>"


def test_context_needs_retrieval_column():
    cfg = make_cfg({"task": "t", "retrieval": {"type": "random", "k": 1}})
    with pytest.raises(DataError, match="no '__context__' column; run retrieval first"):
        render_prompts(Dataset.from_dict({"text": ["a"], "label": ["b"]}), cfg)


# ---------------------------------------------------------------- rendering

def test_a17_rendering():
    "Spec A17: placeholder input feature, several columns and a float spec."
    cfg = load_config({"base_model": BASE, "input_features": [{"name": "question", "type": "text"}],
                       "output_features": [{"name": "answer", "type": "text"}],
                       "prompt": {"template": "You are a helpful chatbot. USER: {instruction}: {country}, {year:.2f} ASSISTANT:"}})
    rows = [("Name this province", "Canada", 1871, "British Columbia"), ("Name this state", "USA", 1959, "Hawaii"),
            ("Name the capital", "France", 508, "Paris")]
    ds = Dataset.from_list([dict(zip(["instruction", "country", "year", "answer"], r)) for r in rows])
    out = render_prompts(ds, cfg)
    assert len(out) == 3
    assert out[PROMPT][0].startswith("You are a helpful chatbot. USER: Name this province: Canada, 1871.00 ASSISTANT:")
    for (ins, c, y, _), p in zip(rows, out[PROMPT]):
        assert p == f"You are a helpful chatbot. USER: {ins}: {c}, {y:.2f} ASSISTANT:"


def test_a17_from_csv_text_cells(tmp_path):
    "CSV cells are text; `{year:.2f}` still formats them as floats, `{year}` keeps them as written."
    p = tmp_path / "a.csv"
    p.write_text("instruction,country,year,answer\nName this province,Canada,1871,British Columbia\nx,y,,z\n")
    cfg = make_cfg({"template": "{instruction}: {country}, {year:.2f} / {year}"}, inp={"name": "question"}, out={"name": "answer"})
    dd, _ = load_splits(cfg, training_set=p)
    out = render_prompts(dd, cfg)
    assert out["train"][PROMPT][:] == ["Name this province: Canada, 1871.00 / 1871", "x: y, <UNK> / <UNK>"]
    assert isinstance(out, DatasetDict) and len(out["test"]) == 0


def test_a18_header_task_and_raw_samples():
    "Spec A18: a fixed few-shot header, {__task__} and {__sample__} over 25 random rows (text checked, no tokenizer)."
    header = "Here are some examples:\ninput: good -> positive\ninput: bad -> negative\n"
    cfg = make_cfg({"template": header + "Task: {__task__}\ninput: {__sample__} ->", "task": "Say positive or negative."})
    rng = random.Random(0)
    alphabet = "abcxyz ÄéñØ漢字🎬\n\t\"'{}\\<>"
    rows = [{"text": "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))).strip() or "x", "label": "y"} for _ in range(25)]
    out = render_prompts(Dataset.from_list(rows), cfg)
    for r, p in zip(rows, out[PROMPT]):
        assert p.startswith(header + "Task: Say positive or negative.\ninput: ")
        assert r["text"] in p and p == f"{header}Task: Say positive or negative.\ninput: {r['text']} ->"


@pytest.mark.parametrize("text", ['Très "bon"', "line1\nline2", '"starts and ends with quotes"', "back\\slash \\n",
                                  "emoji 🎬 and 漢字", "{not} {{a}} field", "tab\there", "'single'"])
def test_sample_is_raw_text(text):
    "W-C5: no JSON escaping; unicode, newlines and quotes (also at the edges) round-trip."
    cfg = make_cfg({"template": "[{__sample__}]"})
    assert render_prompt(cfg, {"text": text}) == f"[{text}]"
    assert render_prompts(Dataset.from_dict({"text": [text]}), cfg)[PROMPT][0] == f"[{text}]"


def test_task_with_braces_is_inserted_as_is():
    cfg = make_cfg({"task": "Answer {yes} or {{no}}."})
    assert "Complete the following task: Answer {yes} or {{no}}.\n" in render_prompt(cfg, {"text": "x"})


def test_doubled_braces_render_as_single():
    assert render_prompt(make_cfg({"template": '{{"text": "{text}"}}'}), {"text": "hi"}) == '{"text": "hi"}'


@pytest.mark.parametrize("missing", [None, float("nan"), "", "   "])
def test_nan_never_appears(missing):
    "Missing values render as the input feature's fill_value, in every kind of field."
    cfg = make_cfg({"template": "{__sample__}|{a}|{b:.1f}"}, inp={"preprocessing": {"fill_value": "?"}})
    assert render_prompt(cfg, {"text": missing, "a": missing, "b": missing}) == "?|?|?"
    as_text = None if isinstance(missing, float) else missing  # a str column cannot hold NaN; a float column can
    ds = Dataset.from_dict({"text": ["x", as_text], "a": [1.5, None if isinstance(missing, str) else missing], "b": [2, None]})
    out = render_prompts(ds, cfg)[PROMPT][:]
    assert out == ["x|1.5|2.0", "?|?|?"]
    assert not any(bad in p.lower() for p in out for bad in ("nan", "none", "null"))


def test_no_template_is_input_as_is_and_lowercase():
    assert render_prompt(make_cfg(), {"text": "Keep As IS\n"}) == "Keep As IS\n"
    cfg = make_cfg({"template": "Q: {__sample__} A:"}, inp={"preprocessing": {"lowercase": True}})
    assert render_prompt(cfg, {"text": "ÉCOLE Big"}) == "Q: école big A:"
    assert render_prompt(make_cfg(inp={"preprocessing": {"lowercase": True}}), {"text": "ABC"}) == "abc"


def test_context_is_inserted():
    cfg = make_cfg({"template": "{__context__}\n---\n{__sample__}", "retrieval": {"type": "random", "k": 1}})
    ds = Dataset.from_dict({"text": ["a", "b"], "label": ["x", "y"], CONTEXT: ["ctx a", None]})
    assert render_prompts(ds, cfg)[PROMPT][:] == ["ctx a\n---\na", "\n---\nb"]


def test_float_spec_on_non_number():
    cfg = make_cfg({"template": "{text} {year:.1f}"})
    with pytest.raises(DataError, match=r"Column 'year' has the value 'soon'.*\{year:.1f\} needs as a number"):
        render_prompts(Dataset.from_dict({"text": ["a"], "year": ["soon"]}), cfg)


def test_render_prompt_matches_batched():
    cfg = make_cfg({"template": "{__task__}\n{a} {b:.3f}\n{__sample__}", "task": "T"})
    ds = Dataset.from_dict({"text": ["x", None, "z\n"], "a": ["p", "q", None], "b": [1, 2.5, None], "label": ["l"] * 3})
    batched = render_prompts(ds, cfg)
    assert [render_prompt(cfg, r) for r in ds] == batched[PROMPT][:]
    assert batched.column_names == ds.column_names + [PROMPT]


def test_render_overwrites_existing_prompt_column():
    cfg = make_cfg({"template": "<{text}>"})
    once = render_prompts(Dataset.from_dict({"text": ["a"]}), cfg)
    assert render_prompts(once, cfg)[PROMPT][:] == ["<a>"]


def test_render_100k_rows_timing():
    n = 100_000
    cfg = make_cfg({"template": "Instruction: {instruction}\nYear: {year:.0f}\nInput: {__sample__}\nTask: {__task__}\nAnswer:",
                    "task": "Summarise."})
    ds = Dataset.from_dict({"instruction": ["Name this province"] * n, "year": list(range(n)), "text": [f"row {i}" for i in range(n)]})
    t0 = time.perf_counter()
    out = render_prompts(ds, cfg)
    print(f"render_prompts: {n:,} rows in {time.perf_counter() - t0:.2f}s")
    assert len(out) == n and out[PROMPT][n - 1] == f"Instruction: Name this province\nYear: {n - 1}\nInput: row {n - 1}\nTask: Summarise.\nAnswer:"
