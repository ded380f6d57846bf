"Export round trips: merged folder, GGUF back into transformers (`gguf_file=`) and into llama.cpp, Ollama, the CLI."
import subprocess, sys
from pathlib import Path
import pandas as pd
import pytest
from llmnb.api import LLM
from llmnb.errors import LlmnbError
from llmnb.export import _tiny_run, export_model, llama_cpp_converter

HELD_OUT = pd.DataFrame(dict(q=["what is 20 plus 20?", "name a colour", "what is 7 plus 1?", "hello", "what is 3 plus 9?"]))

def _converter_or_skip():
    try: return llama_cpp_converter()
    except LlmnbError as e: pytest.skip(str(e))

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return _tiny_run(tmp_path_factory.mktemp("export"))

@pytest.fixture(scope="module")
def expected(run):
    return LLM.load(run).predict(HELD_OUT)

@pytest.fixture(scope="module")
def gguf_f16(run, tmp_path_factory):
    _converter_or_skip()
    return export_model(run, tmp_path_factory.mktemp("gguf"), "gguf", "f16")/"model-f16.gguf"

def test_gguf_f16_loads_in_transformers_and_answers_as_the_run(gguf_f16, expected, run):
    from transformers import AutoModelForCausalLM
    from llmnb.generate import generate_batch
    llm = LLM.load(run)
    llm.model = AutoModelForCausalLM.from_pretrained(gguf_f16.parent, gguf_file=gguf_f16.name, dtype="float32")
    assert llm.predict(HELD_OUT)["a_predictions"].tolist() == expected["a_predictions"].tolist()

def test_gguf_f16_loads_in_llama_cpp_and_answers_as_the_run(gguf_f16, expected, run):
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = LLM.load(run)
    m = llama_cpp.Llama(str(gguf_f16), n_ctx=512, verbose=False, n_threads=2)
    ids = [r["prompt_ids"] for r in llm._generate_rendered(llm._render(llm._as_dataset(HELD_OUT)), generate=False)]
    eos = {m.token_eos()}
    got = []
    for p in ids:
        out = []
        for t in m.generate(p, temp=0.0, top_k=1, reset=True):
            out.append(t)
            if t in eos or len(out) == 8: break
        got.append(llm.tokenizer.decode(out, skip_special_tokens=True).strip())
    assert got == expected["a_predictions"].tolist()

def test_llama_cpp_generate_batched_answers_as_the_run(gguf_f16, expected, run):
    "Continuous batching in llama.cpp: 2 slots for 5 prompts, so finished sequences are refilled; same answers as the run."
    pytest.importorskip("llama_cpp")
    from llmnb.export import llama_cpp_generate
    llm = LLM.load(run)
    ids = [r["prompt_ids"] for r in llm._generate_rendered(llm._render(llm._as_dataset(HELD_OUT)), generate=False)]
    outs = llama_cpp_generate(gguf_f16, ids, 8, llm.tokenizer.eos_token_id, slots=2, threads=1)
    assert [llm.tokenizer.decode(o, skip_special_tokens=True).strip() for o in outs] == expected["a_predictions"].tolist()
    assert all(len(o) <= 8 for o in outs)

def test_predict_engine_llama_cpp_answers_as_transformers(run, expected, tmp_path):
    "`llmnb predict --engine llama_cpp`: the run converted to an f32 GGUF, decoded by llama.cpp; same answers; sampling refused."
    _converter_or_skip(); pytest.importorskip("llama_cpp")
    HELD_OUT.to_csv(tmp_path/"q.csv", index=False)
    r = subprocess.run([sys.executable, "-c", "from llmnb.cli import main; main()", "predict", "-m", str(run), "--dataset", str(tmp_path/"q.csv"),
                        "--engine", "llama_cpp", "-od", str(tmp_path/"out")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = pd.read_csv(tmp_path/"out"/"predictions.csv", keep_default_na=False)["a_predictions"].tolist()
    assert got == expected["a_predictions"].tolist()
    llm = LLM.load(run); llm.engine = "llama_cpp"
    with pytest.raises(LlmnbError, match="only greedy decoding"): llm.predict(HELD_OUT, generation_config=dict(do_sample=True))

def test_ollama_export_and_cli(run, tmp_path):
    _converter_or_skip()
    r = subprocess.run([sys.executable, "-c", "from llmnb.cli import main; main()", "export", "-m", str(run), "-f", "ollama", "-od", str(tmp_path/"o")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    mf = (tmp_path/"o"/"Modelfile").read_text()
    assert "FROM ./model-f16.gguf" in mf and "PARAMETER temperature 0" in mf and "PARAMETER num_predict 8" in mf
    assert (tmp_path/"o"/"model-f16.gguf").stat().st_size > 0

def test_quantized_q8_0_and_q4_k_m(run, tmp_path, expected):
    "q8_0 (the converter) and q4_k_m (llama.cpp's quantizer) write loadable files; agreement is reported, not required."
    llama_cpp = pytest.importorskip("llama_cpp")
    _converter_or_skip()
    for q in ("q8_0", "q4_k_m"):
        f = export_model(run, tmp_path/q, "gguf", q)/f"model-{q}.gguf"
        assert llama_cpp.Llama(str(f), n_ctx=128, verbose=False).n_vocab() > 0

def test_bad_export_requests(run, tmp_path):
    with pytest.raises(LlmnbError, match="not one of merged, gguf, ollama"): export_model(run, tmp_path/"x", "onnx")
    with pytest.raises(LlmnbError, match="allowed: f32, f16"): export_model(run, tmp_path/"x", "gguf", "q3")
    r = subprocess.run([sys.executable, "-c", "from llmnb.cli import main; main()", "export", "-m", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "llmnb export: error: model_path" in r.stderr
