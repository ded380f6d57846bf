"""End-to-end checks of `llmnb.upload` against a loopback Hub (tests/upload_fakehub.py) with real tiny runs."""
import contextlib, io, json, shutil, time

import huggingface_hub
import pytest
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.utils import disable_progress_bars

from llmnb.upload import UploadError, model_card, upload_to_hf_hub
from upload_fakehub import FakeHub, tiny_run

disable_progress_bars()
TOKEN = "hf_TestToken0123456789abcdefABCDEF"


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    with contextlib.redirect_stderr(io.StringIO()):
        return {"adapter": tiny_run(root, "adapter"), "merged": tiny_run(root, "adapter", merged=True),
                "full": tiny_run(root, "full")}


@pytest.fixture
def hub(monkeypatch):
    for v in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"): monkeypatch.delenv(v, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # CI runs offline; this hub is loopback
    with FakeHub(token=TOKEN) as h:
        monkeypatch.setenv("HF_ENDPOINT", h.url)
        yield h


@pytest.fixture
def lfs_hub(monkeypatch, hub):
    "A hub that asks for weights through git-LFS; xet is switched off so the client uses LFS basic transfer."
    hub.lfs = ("*.safetensors", "*.bin")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    return hub


def _snapshot(d):
    return {p.relative_to(d).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("which,what,sub", [("adapter", "auto", "model"), ("merged", "auto", "merged"),
                                            ("merged", "adapter", "model"), ("full", "auto", "model")])
@pytest.mark.parametrize("mode", ["regular", "lfs"])
def test_upload_runs(runs, request, which, what, sub, mode):
    hub = request.getfixturevalue("hub" if mode == "regular" else "lfs_hub")
    run = runs[which]
    before = _snapshot(run)
    url = upload_to_hf_hub(f"me/{which}-{what}", run, private=True, token=TOKEN, what=what,
                           commit_message="first upload", commit_description="details")
    assert url == f"{hub.url}/me/{which}-{what}"
    assert hub.repos["model", f"me/{which}-{what}"]["private"] is True
    files = hub.repo_files(f"me/{which}-{what}")
    src = run / sub
    local = {p.relative_to(src).as_posix(): p.read_bytes() for p in src.rglob("*") if p.is_file()}
    assert set(files) == set(local) | {"README.md"}
    for name, data in local.items():
        if name not in ("README.md", "llmnb.json"): assert files[name] == data, name
    assert files["README.md"].decode() == model_card(src, f"me/{which}-{what}")
    assert json.loads(files["llmnb.json"]) == json.loads(local["llmnb.json"])
    assert hub.auth_headers() == {f"Bearer {TOKEN}"}
    assert all(TOKEN.encode() not in b for b in files.values())
    assert [(c["summary"], c["description"]) for c in hub.commits] == [("first upload", "details")]
    if mode == "lfs":  # weights went through the LFS batch API, the rest inline
        weights = [n for n in local if n.endswith(".safetensors")]
        assert weights and {hub_obj for hub_obj in hub.lfs_objects.values()} == {local[n] for n in weights}
        assert any(p.endswith("/info/lfs/objects/batch") for _, p, _ in hub.requests)
        assert {a for m, p, a in hub.requests if m == "PUT"} == {None}  # the token is not sent to storage
    assert _snapshot(run) == before  # the run folder is untouched


def test_public_default_and_other_repo_types(runs, hub):
    upload_to_hf_hub("me/pub", runs["full"], token=TOKEN)
    assert hub.repos["model", "me/pub"]["private"] is False
    url = upload_to_hf_hub("me/ds", runs["adapter"], repo_type="dataset", token=TOKEN)
    assert url == f"{hub.url}/datasets/me/ds" and "adapter_model.safetensors" in hub.repo_files("me/ds", "dataset")
    assert hub.commits[0]["summary"] == "Upload full model trained with llmnb"


def test_existing_repo_is_reused(runs, hub):
    upload_to_hf_hub("me/again", runs["adapter"], token=TOKEN)
    upload_to_hf_hub("me/again", runs["adapter"], token=TOKEN, what="adapter")
    assert len([c for c in hub.commits if c["repo"] == "me/again"]) == 2


# ----------------------------------------------------------------------------------------------------- the token
@pytest.mark.parametrize("var", ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"])
def test_token_from_env(runs, hub, monkeypatch, var):
    monkeypatch.setenv(var, TOKEN)
    upload_to_hf_hub("me/env", runs["adapter"])
    assert hub.auth_headers() == {f"Bearer {TOKEN}"} and "README.md" in hub.repo_files("me/env")


def test_token_from_login_cache(runs, hub, monkeypatch, tmp_path):
    (tmp_path / "token").write_text(TOKEN)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "token"))
    upload_to_hf_hub("me/cache", runs["adapter"])
    assert hub.auth_headers() == {f"Bearer {TOKEN}"}


def test_argument_beats_env(runs, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_SomeOtherToken0123456789abcdef")
    upload_to_hf_hub("me/arg", runs["adapter"], token=TOKEN)
    assert hub.auth_headers() == {f"Bearer {TOKEN}"}


def test_missing_token(runs, hub, monkeypatch, tmp_path):
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(UploadError, match=r"set HF_TOKEN or run `hf auth login`"):
        upload_to_hf_hub("me/none", runs["adapter"])
    assert hub.requests == []


# ---------------------------------------------------------------------------------------------------- failures
def _one_line(e): 
    msg = str(e.value)
    assert "\n" not in msg and TOKEN not in msg and e.value.__suppress_context__
    return msg


@pytest.mark.parametrize("bad", ["hf_WrongToken0123456789abcdefABCDEF", "not-even-hf-shaped"])
def test_rejected_token(runs, hub, bad):
    with pytest.raises(UploadError) as e: upload_to_hf_hub("me/x", runs["adapter"], token=bad)
    msg = _one_line(e)
    assert "rejected the token" in msg and "HTTP 401" in msg and "hf auth login" in msg and bad not in msg
    assert hub.repos == {} and hub.commits == []


def test_403_on_create(runs, hub):
    hub.fail["create"] = 403
    with pytest.raises(UploadError) as e: upload_to_hf_hub("other-org/x", runs["adapter"], token=TOKEN)
    assert "rejected the token" in _one_line(e) and "HTTP 403" in str(e.value)


def test_500_on_commit(runs, hub, monkeypatch):
    hub.fail["commit"] = 500
    monkeypatch.setattr(time, "sleep", lambda s: None)  # huggingface_hub retries 5 times with backoff
    with pytest.raises(UploadError) as e: upload_to_hf_hub("me/broken", runs["adapter"], token=TOKEN)
    msg = _one_line(e)
    assert "HTTP 500" in msg and "did not complete" in msg and "me/broken" in msg
    assert hub.commits == [] and hub.repo_files("me/broken") == {}
    assert len([r for r in hub.requests if r[1].endswith("/commit/main")]) == 6  # first try + 5 retries


def test_transient_500_is_retried(runs, hub, monkeypatch):
    hub.fail.update(commit=500, commit_times=1)
    monkeypatch.setattr(time, "sleep", lambda s: None)
    upload_to_hf_hub("me/flaky", runs["adapter"], token=TOKEN)
    assert len(hub.commits) == 1 and "adapter_model.safetensors" in hub.repo_files("me/flaky")


def test_offline_mode(runs, hub, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UploadError, match=r"unset HF_HUB_OFFLINE"): upload_to_hf_hub("me/x", runs["adapter"], token=TOKEN)
    assert hub.requests == []


def test_unreachable_hub(runs, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with FakeHub() as h: dead = h.url  # closed again: nothing listens there
    monkeypatch.setenv("HF_ENDPOINT", dead)
    monkeypatch.setattr(time, "sleep", lambda s: None)
    with pytest.raises(UploadError) as e: upload_to_hf_hub("me/x", runs["adapter"], token=TOKEN)
    assert "creating 'me/x' failed" in _one_line(e) and "HF_ENDPOINT" in str(e.value)


@pytest.mark.parametrize("repo_id", ["justname", "a/b/c", "/name", "me/", "me/bad name", "me/--x"])
def test_bad_repo_id(runs, hub, repo_id):
    with pytest.raises(UploadError, match=r"repo_id") as e: upload_to_hf_hub(repo_id, runs["adapter"], token=TOKEN)
    assert repo_id in str(e.value) and hub.requests == []


def test_bad_repo_type(runs, hub):
    with pytest.raises(UploadError, match=r"repo_type='kernel'.*model, dataset, space"):
        upload_to_hf_hub("me/x", runs["adapter"], repo_type="kernel", token=TOKEN)


def test_paths(runs, hub, tmp_path):
    with pytest.raises(UploadError, match=r"does not exist"): upload_to_hf_hub("me/x", tmp_path / "nope", token=TOKEN)
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(UploadError, match=r"is a file"): upload_to_hf_hub("me/x", tmp_path / "f.txt", token=TOKEN)
    (tmp_path / "run" / "model").mkdir(parents=True)
    (tmp_path / "run" / "model" / "tokenizer.json").write_text("{}")
    with pytest.raises(UploadError, match=r"no model weights: found tokenizer.json; expected adapter_config.json"):
        upload_to_hf_hub("me/x", tmp_path / "run", token=TOKEN)
    with pytest.raises(UploadError, match=r"has no merged model"): upload_to_hf_hub("me/x", runs["adapter"], what="merged", token=TOKEN)
    with pytest.raises(UploadError, match=r"holds no adapter"): upload_to_hf_hub("me/x", runs["full"], what="adapter", token=TOKEN)
    with pytest.raises(UploadError, match=r"what='both'"): upload_to_hf_hub("me/x", runs["full"], what="both", token=TOKEN)
    assert hub.requests == []


def test_adapter_weights_without_config(runs, hub, tmp_path):
    d = shutil.copytree(runs["adapter"] / "model", tmp_path / "model")
    (d / "adapter_config.json").unlink()
    with pytest.raises(UploadError, match=r"no model weights: found .*adapter_model.safetensors"):
        upload_to_hf_hub("me/x", d, token=TOKEN)


def test_sharded_full_model(runs, hub, tmp_path):
    from transformers import AutoModelForCausalLM
    d = tmp_path / "sharded"
    with contextlib.redirect_stderr(io.StringIO()):
        AutoModelForCausalLM.from_pretrained(runs["full"] / "model").save_pretrained(d, max_shard_size="20KB")
    shutil.copy(runs["full"] / "model" / "llmnb.json", d)
    shards = sorted(p.name for p in d.glob("model-*.safetensors"))
    assert len(shards) > 1 and (d / "model.safetensors.index.json").exists()
    upload_to_hf_hub("me/sharded", d, token=TOKEN)
    files = hub.repo_files("me/sharded")
    assert all(files[s] == (d / s).read_bytes() for s in shards) and "model.safetensors.index.json" in files
    (d / shards[-1]).unlink()
    with pytest.raises(UploadError, match=rf"shards that are missing: {shards[-1]}"):
        upload_to_hf_hub("me/sharded", d, token=TOKEN)


# -------------------------------------------------------------------------------------------------- model card
def test_card_metadata(runs):
    a, m, f = (ModelCard(model_card(runs[k])).data for k in ("adapter", "merged", "full"))
    assert (a.library_name, a.tags, a.pipeline_tag) == ("peft", ["llmnb", "lora"], "text-generation")
    assert (m.library_name, m.tags) == ("transformers", ["llmnb", "lora", "merged"])
    assert (f.library_name, f.tags) == ("transformers", ["llmnb", "full-fine-tune"])
    assert a.base_model is None  # a local base path is not valid Hub metadata


def test_card_hub_base_model_and_content(runs, tmp_path):
    d = shutil.copytree(runs["adapter"], tmp_path / "run")
    meta = json.loads((d / "model" / "llmnb.json").read_text())
    meta["base_model"] = meta["config"]["base_model"] = "meta-llama/Llama-3.2-1B"
    (d / "model" / "llmnb.json").write_text(json.dumps(meta))
    card = model_card(d, "me/tiny")
    assert ModelCard(card).data.base_model == "meta-llama/Llama-3.2-1B"
    for piece in ("# tiny", "LoRA adapter", "r=4", "lora_alpha=8", "target_modules=['q_proj', 'v_proj']",
                  "| training rows | 12 |", "### Review: {review}\n### Sentiment:", "| validation | perplexity | 12.2 | 12.2 |",
                  "| train | loss | 2.7 | 2.7 |", 'AutoPeftModelForCausalLM.from_pretrained("me/tiny")', "```yaml"):
        assert piece in card, piece
    cfg = yaml.safe_load(card.split("```yaml\n")[1].split("```")[0])
    assert cfg == meta["config"]


def test_card_and_upload_drop_secrets(runs, hub, tmp_path):
    d = shutil.copytree(runs["adapter"], tmp_path / "run")
    meta = json.loads((d / "model" / "llmnb.json").read_text())
    leaked = "hf_LeakedInConfig0123456789abcdefXYZ"
    meta["config"]["hf_token"] = leaked
    meta["config"]["trainer"]["api_key"] = "sk-something"
    meta["config"]["prompt"]["template"] = f"note {TOKEN} " + "{review}"
    (d / "model" / "llmnb.json").write_text(json.dumps(meta))
    card = model_card(d, token=TOKEN)
    assert leaked not in card and "sk-something" not in card and TOKEN not in card and "api_key" not in card
    upload_to_hf_hub("me/secret", d, token=TOKEN)
    for name, data in hub.repo_files("me/secret").items():
        assert leaked.encode() not in data and TOKEN.encode() not in data and b"sk-something" not in data, name
    assert (d / "model" / "llmnb.json").read_text().count(leaked) == 1  # the run folder itself is left alone


@pytest.mark.parametrize("which", ["adapter", "merged", "full"])
def test_card_snippet_loads_model_without_llmnb(runs, hub, which, tmp_path):
    "Download what was uploaded, then run the card's snippet with the repo id pointing at that copy."
    upload_to_hf_hub(f"me/snippet-{which}", runs[which], token=TOKEN)
    repo = tmp_path / "repo"
    for name, data in hub.repo_files(f"me/snippet-{which}").items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True); (repo / name).write_bytes(data)
    card = (repo / "README.md").read_text()
    code = card.split("```python\n")[1].split("```")[0].replace(f'"me/snippet-{which}"', json.dumps(str(repo)))
    assert "llmnb" not in code
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()): exec(code, {})
    assert isinstance(out.getvalue(), str) and out.getvalue().endswith("\n")


def test_card_tokenizer_falls_back_to_base(runs, tmp_path):
    d = shutil.copytree(runs["adapter"] / "model", tmp_path / "model")
    for n in ("tokenizer.json", "tokenizer_config.json"): (d / n).unlink()
    base = json.loads((d / "llmnb.json").read_text())["base_model"]
    assert f'AutoTokenizer.from_pretrained("{base}")' in model_card(d, "me/x")
