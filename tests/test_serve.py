"`llmnb serve`: the official `openai` client against 127.0.0.1, Ludwig's routes, 401/503/504, and 16 concurrent clients."
import json, threading, time
from concurrent.futures import ThreadPoolExecutor
import pandas as pd
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from llmnb.api import LLM
from llmnb.export import _tiny_run
from llmnb.serve import ServedModel, make_app, running

QUESTIONS = [f"what is {i} times {i + 3}?" for i in range(16)]

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    run = _tiny_run(tmp_path_factory.mktemp("serve"))
    sm = ServedModel(LLM.load(run), "tiny", max_batch=16, max_queue=32)
    with running(make_app(sm, api_key="k", timeout=60)) as url:
        yield sm, url, openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
    sm.engine.close()

def test_models_and_completions(served):
    sm, url, client = served
    assert [m.id for m in client.models.list()] == ["tiny"]
    prompt = "Q: what is 2 plus 2?\nA:"
    r = client.completions.create(model="tiny", prompt=prompt, max_tokens=8)
    assert r.choices[0].text == sm.llm.generate(prompt, dict(max_new_tokens=8))
    assert r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens >= 1
    streamed = "".join(c.choices[0].text for c in client.completions.create(model="tiny", prompt=prompt, max_tokens=8, stream=True))
    assert streamed == r.choices[0].text

def test_chat_streaming_and_not(served):
    sm, url, client = served
    msgs = [dict(role="user", content="hello there")]
    r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=6)
    ids = sm.chat_ids(msgs)
    from llmnb.generate import generate_batch
    from llmnb.api import generation_config_for
    want = generate_batch(sm.llm.model, sm.tok, [ids], generation_config_for(sm.llm, dict(max_new_tokens=6)))[0]["text"]
    assert r.choices[0].message.content == want and r.choices[0].message.role == "assistant"
    chunks = list(client.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")

def test_api_key_and_bad_requests(served):
    sm, url, client = served
    bad = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError): bad.models.list()
    with pytest.raises(openai.BadRequestError, match="only n=1"): client.completions.create(model="tiny", prompt="x", n=2)
    with pytest.raises(openai.BadRequestError, match="unsupported request fields"):
        client.completions.create(model="tiny", prompt="x", logprobs=2)

def test_queue_full_is_503_and_timeout_is_504(served, tmp_path):
    sm, url, client = served
    small = ServedModel(sm.llm, "tiny", max_batch=1, max_queue=1)
    codes = []
    def first(c):
        try: c.completions.create(model="tiny", prompt="a")
        except openai.APIStatusError as e: codes.append(e.status_code)
    with running(make_app(small, timeout=1.0)) as u, small.engine.lock:   # the model is busy: nothing finishes
        c = openai.OpenAI(base_url=u + "/v1", api_key="x", max_retries=0)
        t = threading.Thread(target=first, args=(c,)); t.start(); time.sleep(0.3)
        with pytest.raises(openai.InternalServerError, match="queue") as e: c.completions.create(model="tiny", prompt="b")
        assert e.value.status_code == 503
        t.join()
    assert codes == [504]
    small.engine.close()

def test_ludwig_predict_routes(served):
    sm, url, client = served
    want = sm.llm.predict(pd.DataFrame(dict(q=QUESTIONS[:3])))
    h = {"Authorization": "Bearer k"}
    one = httpx.post(url + "/predict", data=dict(q=QUESTIONS[0]), headers=h).json()
    assert one["a_predictions"] == want["a_predictions"][0]
    ds = json.dumps(dict(columns=["q"], data=[[q] for q in QUESTIONS[:3]]))
    batch = httpx.post(url + "/batch_predict", data=dict(dataset=ds), headers=h).json()
    assert [row[batch["columns"].index("a_predictions")] for row in batch["data"]] == want["a_predictions"].tolist()
    assert httpx.post(url + "/batch_predict", data=dict(dataset="nope"), headers=h).status_code == 400

def test_16_concurrent_clients_answer_as_predict(served):
    "Bounded load test: 16 clients at once, all answered, none lost, each the text `llmnb predict` writes."
    sm, url, client = served
    want = sm.llm.predict(pd.DataFrame(dict(q=QUESTIONS)))["a_predictions"].tolist()
    steps0 = sm.engine.steps
    ask = lambda q: client.completions.create(model="tiny", prompt=f"Q: {q}\nA:").choices[0].text
    with ThreadPoolExecutor(16) as ex: got = list(ex.map(ask, QUESTIONS))
    assert got == want
    # batched: far fewer decoding steps than 16 requests one after another would take
    assert sm.engine.steps - steps0 < sum(1 + len(sm.tok(w)["input_ids"]) for w in want)
