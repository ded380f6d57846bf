"""Generate the benchmark's instruction dataset: 1,000 rows with a long-tailed length distribution.

Prompts run from about 20 to 600 tokens and answers from 2 to 150 tokens (SmolLM2 tokenizer), both log-normal,
so most rows are short and a few are long, as in real instruction data. Every answer follows from its prompt
(copy a passage, count a word, answer yes/no, list items), so a model can learn the tasks and the validation
loss means something. The output is deterministic: `python bench/data.py` rewrites `bench/data/instructions.jsonl`
byte for byte; `python bench/data.py --stats` prints the token-length distribution.
"""
from __future__ import annotations
import argparse, json, math, random
from pathlib import Path

HERE = Path(__file__).parent
PATH = HERE/"data"/"instructions.jsonl"
ROWS, SEED = 1000, 20240611

ADJ = "quiet busy old young bright dark small large green red silver wooden heavy light careful clever tired happy".split()
NOUN = ("farmer teacher river engine village market doctor bridge garden painter sailor lantern window forest "
        "kitchen library train student castle merchant").split()
VERB = "watched repaired crossed painted visited followed carried opened cleaned measured described found".split()
PLACE = "the harbour|the old mill|the north road|the school|the hill|the station|the square|the lake".split("|")
TIME = "at dawn|in the evening|after the storm|before lunch|on Sunday|during the festival|late at night".split("|")
COLORS = "red blue green yellow purple orange black white grey brown".split()

def sentence(r: random.Random) -> str:
    "One plain English sentence of 6 to 18 words."
    s = f"The {r.choice(ADJ)} {r.choice(NOUN)} {r.choice(VERB)} the {r.choice(NOUN)}"
    if r.random() < .7: s += f" near {r.choice(PLACE)}"
    if r.random() < .5: s += f" {r.choice(TIME)}"
    if r.random() < .3:
        c = r.choice(COLORS)
        s += f" with {'an' if c[0] in 'aeiou' else 'a'} {c} {r.choice(NOUN)}"
    return s + "."

def passage(r: random.Random, words: int) -> str:
    out, n = [], 0
    while n < words:
        s = sentence(r); out.append(s); n += len(s.split())
    return " ".join(out)

def _lognormal(r, median, sigma, lo, hi):
    return int(min(max(round(median * math.exp(r.gauss(0, sigma))), lo), hi))

TOKENS_PER_WORD = 1.25  # SmolLM2 tokenizer on this vocabulary (measured by --stats)

def make_row(r: random.Random, i: int) -> dict:
    "One row: a prompt of ~log-normal length and an answer of ~log-normal length that follows from it."
    p_words = _lognormal(r, 70, .8, 8, 470) # prompt words
    a_words = _lognormal(r, 12, 1.0, 1, 118) # answer words
    long = p_words >= 40
    text = passage(r, max(p_words - (25 if long else 12), 4))
    if a_words <= 2:
        task = r.choice(["yesno", "count"])
        if task == "yesno":
            w = r.choice(NOUN)
            q, a = f"Does the text mention a {w}? Answer yes or no.", "yes" if f" {w}" in text else "no"
        else:
            w = r.choice(ADJ)
            q, a = f"How many times does the word '{w}' appear in the text? Answer with a number.", str(text.split().count(w))
    elif a_words <= 6:
        task = "colors"
        cs = [c for c in text.replace(".", "").split() if c in COLORS]
        q, a = "List the colours mentioned in the text, in order, separated by commas.", ", ".join(cs) if cs else "none"
    else:
        task = "copy"
        words = text.split()
        start = r.randrange(0, max(len(words) - a_words, 1))
        q = f"Copy {a_words} words of the text exactly, starting at word {start + 1} ('{words[start]}')."
        a = " ".join(words[start:start + a_words])
        if len(words) < start + a_words:  # a longer answer than the passage: continue with a new passage
            a = " ".join((words[start:] + passage(r, a_words).split())[:a_words])
            q = f"Copy the text from word {start + 1} ('{words[start]}') to the end, then write a new sentence or more so the answer has {a_words} words."
    prompt = f"Read the text and follow the instruction.\n\nText: {text}\n\nInstruction: {q}" if long else f"{text}\n{q}"
    return dict(id=i, task=task, prompt=prompt, answer=a)

def generate(rows: int = ROWS, seed: int = SEED) -> list[dict]:
    r = random.Random(seed)
    return [make_row(r, i) for i in range(rows)]

def write(path: Path = PATH):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(d) + "\n" for d in generate()))
    return path

def load(path: Path = PATH) -> list[dict]:
    return [json.loads(l) for l in Path(path).read_text().splitlines()]

def stats(rows, tok) -> dict:
    import numpy as np
    P = np.array([len(x) for x in tok([d["prompt"] for d in rows])["input_ids"]])
    A = np.array([len(x) + 1 for x in tok([d["answer"] for d in rows], add_special_tokens=False)["input_ids"]])  # + EOS
    q = lambda v: {k: int(x) for k, x in zip(("min", "p10", "p50", "p90", "p99", "max"), np.percentile(v, [0, 10, 50, 90, 99, 100]))} | {"mean": round(float(v.mean()), 1)}
    return dict(prompt_tokens=q(P), answer_tokens=q(A), total_tokens=int(P.sum() + A.sum()))

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stats", action="store_true", help="print token-length statistics (needs llmnb's embedded tokenizer)")
    a = ap.parse_args()
    if a.stats:
        from transformers import AutoTokenizer
        from llmnb.model import resolve_base_model
        print(json.dumps(stats(load(), AutoTokenizer.from_pretrained(resolve_base_model("smollm2-135m-instruct"))), indent=1))
    else: print(f"wrote {write()}")
