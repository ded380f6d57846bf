"""Test support for `llmnb.upload`: a loopback stand-in for the Hugging Face Hub HTTP API, and tiny real runs.

`FakeHub` answers the endpoints that `huggingface_hub`'s `create_repo` and `upload_folder` call (repo creation,
README metadata validation, preupload, the git-LFS batch API with basic transfer, commit) and records what arrives:
repos with their privacy flag, committed files with their bytes, and the Authorization header of every request.
It binds to 127.0.0.1 only. `tiny_run` writes a real llmnb run folder (adapter, merged or full) from a random
two-layer Llama and a small word-level tokenizer, all built offline.
"""
import base64, fnmatch, hashlib, json, re, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

_REPO = r"(?P<repo>[^/]+/[^/]+)"
_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}


class FakeHub:
    "A loopback Hub: `with FakeHub(token=...) as hub:` sets `hub.url`; failures are injected with `fail`."

    def __init__(self, token=None, lfs=(), fail=None):
        self.token = token  # the only token accepted (None: accept any)
        self.lfs = tuple(lfs)  # glob patterns the server asks to upload through git-LFS
        self.fail = dict(fail or {})  # step -> HTTP status ("create", "commit", "preupload"); "<step>_times" limits it
        self.repos, self.files, self.commits, self.lfs_objects = {}, {}, [], {}
        self.requests = []  # (method, path, Authorization header)
        self.lock = threading.Lock()

    # -- server lifecycle
    def __enter__(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a): pass

            def do_GET(self): hub._handle(self, "GET")
            def do_POST(self): hub._handle(self, "POST")
            def do_PUT(self): hub._handle(self, "PUT")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    # -- what the tests read
    def repo_files(self, repo_id, repo_type="model"):
        "Committed files of `repo_id`: {path: bytes}."
        return {p: b for (t, r, p), b in self.files.items() if r == repo_id and t == repo_type}

    def auth_headers(self):
        "Authorization headers sent to the Hub API (LFS storage PUTs are presigned-URL style and carry none)."
        return {a for m, p, a in self.requests if not (m == "PUT" and p.startswith("/_lfs/"))}

    # -- plumbing
    def _should_fail(self, step):
        if step not in self.fail: return None
        times = self.fail.get(f"{step}_times")
        if times is not None:
            if times <= 0: return None
            self.fail[f"{step}_times"] = times - 1
        return self.fail[step]

    def _handle(self, h, method):
        n = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(n) if n else b""
        auth = h.headers.get("Authorization")
        path = h.path.split("?")[0]
        with self.lock: self.requests.append((method, path, auth))
        storage = method == "PUT" and path.startswith("/_lfs/")  # like a presigned S3 URL: no token needed
        if self.token is not None and not storage and auth != f"Bearer {self.token}":
            return self._send(h, 401, {"error": "Invalid credentials in Authorization header"})
        try:
            status, payload = self._route(method, path, body)
        except Exception as e:  # a bug in the fake: make it visible to the test
            status, payload = 599, {"error": f"fake hub error: {e!r}"}
        self._send(h, status, payload)

    def _send(self, h, status, payload):
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _route(self, method, path, body):
        m = re.fullmatch(r"/api/repos/create", path)
        if m and method == "POST":
            if code := self._should_fail("create"): return code, {"error": "Invalid username or password."}
            d = json.loads(body)
            repo_id, rtype = f"{d['organization']}/{d['name']}", d.get("type", "model")
            url = f"{self.url}/{_PREFIX[rtype]}{repo_id}"
            if (rtype, repo_id) in self.repos: return 409, {"error": "You already created this repo", "url": url}
            self.repos[(rtype, repo_id)] = {"private": d.get("visibility") == "private", **d}
            return 200, {"url": url, "name": repo_id}
        if path == "/api/validate-yaml" and method == "POST":
            content = json.loads(body)["content"]
            meta = content.split("---")[1] if content.startswith("---") else ""
            if not isinstance(yaml.safe_load(meta), dict): return 400, {"errors": [{"message": "no YAML metadata"}]}
            return 200, {"errors": [], "warnings": []}
        m = re.fullmatch(rf"/api/(?P<t>models|datasets|spaces)/{_REPO}/preupload/(?P<rev>[^/]+)", path)
        if m and method == "POST":
            if code := self._should_fail("preupload"): return code, {"error": "preupload failed"}
            if (m["t"][:-1], m["repo"]) not in self.repos: return 404, {"error": "Repository not found"}
            files = json.loads(body)["files"]
            return 200, {"files": [{"path": f["path"], "shouldIgnore": False, "oid": None,
                                    "uploadMode": "lfs" if self._is_lfs(f["path"]) else "regular"} for f in files]}
        m = re.fullmatch(rf"/(?P<t>datasets/|spaces/)?{_REPO}\.git/info/lfs/objects/batch", path)
        if m and method == "POST":
            objs = json.loads(body)["objects"]
            return 200, {"transfer": "basic", "objects": [
                {"oid": o["oid"], "size": o["size"], "authenticated": True,
                 "actions": {"upload": {"href": f"{self.url}/_lfs/{o['oid']}"},
                             "verify": {"href": f"{self.url}/_lfs/{o['oid']}/verify"}}} for o in objs]}
        m = re.fullmatch(r"/_lfs/(?P<oid>[0-9a-f]{64})(?P<verify>/verify)?", path)
        if m and method == "PUT" and not m["verify"]:
            if hashlib.sha256(body).hexdigest() != m["oid"]: return 400, {"error": "sha256 mismatch"}
            self.lfs_objects[m["oid"]] = body
            return 200, {}
        if m and method == "POST" and m["verify"]:
            return (200, {}) if m["oid"] in self.lfs_objects else (404, {"error": "object not uploaded"})
        m = re.fullmatch(rf"/api/(?P<t>models|datasets|spaces)/{_REPO}/commit/(?P<rev>[^/]+)", path)
        if m and method == "POST":
            return self._commit(m["t"][:-1], m["repo"], body)
        m = re.fullmatch(rf"/api/(?P<t>models|datasets|spaces)/{_REPO}", path)
        if m and method == "GET":
            if (m["t"][:-1], m["repo"]) not in self.repos: return 404, {"error": "Repository not found"}
            return 200, {"id": m["repo"], "sha": "0" * 40, "private": self.repos[(m["t"][:-1], m["repo"])]["private"]}
        return 404, {"error": f"fake hub: no route for {method} {path}"}

    def _is_lfs(self, path): return any(fnmatch.fnmatch(path, p) for p in self.lfs)

    def _commit(self, rtype, repo_id, body):
        if (rtype, repo_id) not in self.repos: return 404, {"error": "Repository not found"}
        if code := self._should_fail("commit"): return code, {"error": "Internal Error - We're working hard to fix this"}
        lines = [json.loads(l) for l in body.splitlines() if l.strip()]
        header, files = lines[0]["value"], {}
        for item in lines[1:]:
            v = item["value"]
            if item["key"] == "file": files[v["path"]] = base64.b64decode(v["content"])
            elif item["key"] == "lfsFile":
                if v["oid"] not in self.lfs_objects: return 422, {"error": f"LFS object {v['oid']} was never uploaded"}
                files[v["path"]] = self.lfs_objects[v["oid"]]
            else: return 400, {"error": f"fake hub: unexpected commit key {item['key']}"}
        oid = hashlib.sha1(body).hexdigest()
        with self.lock:
            self.commits.append({"repo": repo_id, "type": rtype, "summary": header["summary"],
                                 "description": header.get("description", ""), "files": files})
            for p, b in files.items(): self.files[(rtype, repo_id, p)] = b
        return 200, {"commitUrl": f"{self.url}/{_PREFIX[rtype]}{repo_id}/commit/{oid}", "commitOid": oid,
                     "pullRequestUrl": None}


# ---------------------------------------------------------------------------------------------- tiny real runs
_WORDS = ("the a an is was be to of and in on for with it this that what who how why when where yes no not "
          "good bad great terrible movie film book food service price love hate like okay fine excellent poor "
          "positive negative neutral review sentiment answer question input output response instruction text "
          "label category one two three four five very really quite so too much many more most less").split()


def tiny_tokenizer():
    "A real fast tokenizer (word level, ~100 tokens), built offline."
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    vocab = {w: i for i, w in enumerate(specials + sorted(set(_WORDS)) + list("0123456789.,:;!?#"))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


def tiny_llama(vocab_size):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=1, eos_token_id=2, pad_token_id=3)
    return LlamaForCausalLM(cfg)


CONFIG = {
    "model_type": "llm", "base_model": None,
    "input_features": [{"name": "review", "type": "text"}],
    "output_features": [{"name": "sentiment", "type": "text"}],
    "prompt": {"template": "### Review: {review}\n### Sentiment:"},
    "adapter": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
    "generation": {"max_new_tokens": 8, "do_sample": False},
    "trainer": {"type": "finetune", "epochs": 1, "learning_rate": 1e-4, "batch_size": 2},
}


def tiny_run(root, kind="adapter", merged=False, config=None):
    "Write a real llmnb run folder under `root`: kind 'adapter' (optionally with `merged/`) or 'full'. Returns RUN."
    import peft
    root = Path(root)
    run, base_dir = root / f"run_{kind}{'_merged' if merged else ''}", root / "base"
    tok = tiny_tokenizer()
    if not (base_dir / "config.json").exists():
        tiny_llama(len(tok)).save_pretrained(base_dir)
        tok.save_pretrained(base_dir)
    cfg = json.loads(json.dumps(config or CONFIG))
    cfg["base_model"] = str(base_dir)
    if kind == "full": cfg["adapter"] = None
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    meta = {"llmnb_version": "0.0.1", "config": cfg, "base_model": str(base_dir), "kind": kind, "train_rows": 12,
            "metrics": {"validation": {"loss": 2.5, "perplexity": 12.2}}}
    if kind == "adapter":
        lcfg = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                               task_type="CAUSAL_LM")
        model = peft.get_peft_model(model, lcfg)
    model.save_pretrained(run / "model")
    tok.save_pretrained(run / "model")
    (run / "model" / "llmnb.json").write_text(json.dumps(meta, indent=2))
    if merged:
        full = model.merge_and_unload()
        full.save_pretrained(run / "merged")
        tok.save_pretrained(run / "merged")
        (run / "merged" / "llmnb.json").write_text(json.dumps({**meta, "kind": "merged"}, indent=2))
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (run / "llmnb_statistics.json").write_text(json.dumps(
        {"train": {"loss": [3.1, 2.7]}, "validation": {"loss": [2.9, 2.5], "perplexity": [18.2, 12.2]}}))
    return run
