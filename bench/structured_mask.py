"""Cost of structured output's per-token mask (llguidance) against a forward step of the embedded SmolLM2-135M.

Walks a valid answer token by token through one llguidance matcher (Ludwig's entity-extraction JSON schema), timing
`GrammarConstraint.allowed` (mask + unpack) per token, and times single-row KV-cached decode steps of the model;
prints the medians and their ratio. Run: python bench/structured_mask.py"""
import json, statistics, time
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from llmnb.config import load_config
from llmnb.model import resolve_base_model
from llmnb.structured import GrammarConstraint, check_grammar, ll_tokenizer

SCHEMA = {"type": "object", "properties": {"entities": {"type": "array", "items": {"type": "object", "properties": {
    "text": {"type": "string"}, "type": {"type": "string", "enum": ["PERSON", "ORG", "LOC", "DATE"]}}, "required": ["text", "type"]}}},
    "required": ["entities"], "additionalProperties": False}
ANSWER = json.dumps({"entities": [{"text": "Steve Jobs", "type": "PERSON"}, {"text": "Apple", "type": "ORG"},
                                  {"text": "Cupertino", "type": "LOC"}, {"text": "1976", "type": "DATE"}]}, separators=(",", ":"))

def main(repeats: int = 5):
    path = resolve_base_model("smollm2-135m-instruct")
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()
    dec = load_config(dict(base_model=str(path), input_features=[dict(name="t", type="text")], output_features=[
        dict(name="o", type="text", decoder=dict(type="text_parser", json_schema=SCHEMA))])).output_feature.decoder
    lt = ll_tokenizer(tok, n_vocab=model.get_output_embeddings().weight.shape[0], eos=tok.eos_token_id)
    ids, V = tok(ANSWER, add_special_tokens=False)["input_ids"], model.get_output_embeddings().weight.shape[0]
    mask_s, step_s = [], []
    for _ in range(repeats):
        g = GrammarConstraint(check_grammar(dec, lt), lt, tok.eos_token_id); g.matchers = [__import__("llguidance").LLMatcher(lt, g.grammar)]
        for t in ids:
            t0 = time.perf_counter(); allowed = g.allowed(V); mask_s.append(time.perf_counter() - t0)
            assert allowed[0, t], "the answer must stay inside the grammar"
            g.matchers[0].consume_token(t)
        with torch.no_grad():
            out = model(torch.tensor([ids[:8]]), use_cache=True); cache = out.past_key_values
            for t in ids[8:24]:
                t0 = time.perf_counter(); out = model(torch.tensor([[t]]), past_key_values=cache, use_cache=True)
                cache = out.past_key_values; step_s.append(time.perf_counter() - t0)
    m, s = statistics.median(mask_s), statistics.median(step_s)
    print(f"tokens per answer {len(ids)}; median mask {m * 1e3:.3f} ms; median decode step {s * 1e3:.2f} ms; mask/step {m / s:.3f}")

if __name__ == "__main__": main()
