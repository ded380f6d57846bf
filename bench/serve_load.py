"""`llmnb serve` under load: N concurrent clients against the same requests one after another (SmolLM2-135M, greedy).

    python bench/serve_load.py                 # 16 clients, 32 prompts, max_tokens 64
    python bench/serve_load.py --clients 16 --prompts 64

The server runs in this process on 127.0.0.1 (uvicorn thread, the continuous-batching engine); requests go through
the official `openai` client. Prints requests/s, generated tokens/s, p50/p99 latency, the speed-up over sequential
requests, and whether every answer is the text `LLM.predict` writes for the same rows.
"""
import argparse, json, os, sys, time, statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import data as bench_data

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=16); ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64); ap.add_argument("--out", default=str(HERE/"results"/"serve_load.json"))
    a = ap.parse_args(argv)
    import openai, pandas as pd
    from llmnb.api import LLM
    from llmnb.serve import ServedModel, make_app, running
    cfg = dict(base_model="smollm2-135m-instruct", input_features=[dict(name="prompt", type="text")],
               output_features=[dict(name="answer", type="text")], prompt=dict(template="{prompt}\nAnswer:\n"),
               generation=dict(max_new_tokens=a.max_tokens, do_sample=False))
    llm = LLM(cfg).load_base()
    rows = [r["prompt"] for r in bench_data.load()[680:680 + a.prompts]]
    t0 = time.perf_counter(); want = llm.predict(pd.DataFrame(dict(prompt=rows)))["answer_predictions"].tolist()
    predict_s = time.perf_counter() - t0
    sm = ServedModel(llm, "smollm2", max_batch=a.clients, max_queue=4 * a.clients)
    res = dict(clients=a.clients, prompts=a.prompts, max_tokens=a.max_tokens, predict_s=predict_s, load_before=os.getloadavg())
    with running(make_app(sm)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
        def ask(p):
            t = time.perf_counter()
            r = client.completions.create(model="smollm2", prompt=p + "\nAnswer:\n", max_tokens=a.max_tokens)
            return r.choices[0].text, r.usage.completion_tokens, time.perf_counter() - t
        for mode, workers in (("sequential", 1), ("concurrent", a.clients)):
            t = time.perf_counter()
            with ThreadPoolExecutor(workers) as ex: out = list(ex.map(ask, rows))
            wall = time.perf_counter() - t
            lat = sorted(o[2] for o in out)
            res[mode] = dict(wall_s=wall, requests_per_s=len(rows) / wall, tokens_per_s=sum(o[1] for o in out) / wall,
                             p50_s=statistics.median(lat), p99_s=lat[min(len(lat) - 1, int(0.99 * len(lat)))],
                             answered=len(out), same_as_predict=sum(o[0] == w for o, w in zip(out, want)))
    sm.engine.close()
    res["speedup"] = res["concurrent"]["requests_per_s"] / res["sequential"]["requests_per_s"]
    print(json.dumps(res, indent=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True); Path(a.out).write_text(json.dumps(res, indent=1))

if __name__ == "__main__": main()
