"""Run the notebooks a user runs top to bottom, as Jupyter's "Run All" does (`jupyter nbconvert --execute`), with no
Hugging Face token and no network. nbdev's flags (`#| slow`, `#| eval: false`) are invisible to Jupyter, so this is
the check that those notebooks work where a user opens them. Prints one line per notebook and the seconds it took.
    python scripts/nbexec.py [NOTEBOOK ...]    (default: the notebooks with cells nbdev-test skips: eval: false)"""
import json, os, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def user_notebooks() -> list[Path]:
    "Notebooks whose cells Jupyter runs but nbdev-test does not (`#| eval: false`): the ones only this check covers."
    out = []
    for nb in sorted((ROOT/"nbs").glob("*.ipynb")):
        if nb.name.startswith("_"): continue
        cells = json.loads(nb.read_text())["cells"]
        if any(c["cell_type"] == "code" and "#| eval: false" in "".join(c["source"]) for c in cells): out.append(nb)
    return out

def no_token_env(home: str) -> dict:
    "This environment, offline and with no Hugging Face token anywhere a library looks."
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    return {**env, "HF_HUB_OFFLINE": "1", "HF_TOKEN_PATH": str(Path(home)/"no-token"), "TOKENIZERS_PARALLELISM": "false"}

def run(nb: Path, out: str, env: dict) -> tuple[bool, float, str]:
    t = time.time()
    r = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", str(nb),
                        "--output-dir", out, "--ExecutePreprocessor.timeout=1800"],
                       cwd=nb.parent, env=env, capture_output=True, text=True)
    return r.returncode == 0, time.time() - t, r.stderr[-3000:]

def main(args):
    nbs = [Path(a).resolve() for a in args] or user_notebooks()
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        env = no_token_env(tmp)
        for nb in nbs:
            ok, secs, err = run(nb, tmp, env)
            print(f"{'ok  ' if ok else 'FAIL'} {nb.relative_to(ROOT)} ({secs:.0f}s)", flush=True)
            if not ok: failed += 1; print(err)
    print(f"{len(nbs) - failed} passed, {failed} failed (jupyter nbconvert --execute, no token, no network)")
    sys.exit(1 if failed else 0)

if __name__ == "__main__": main(sys.argv[1:])
