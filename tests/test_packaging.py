"Packaging: every package llmnb imports is declared, so a plain `pip install` of the wheel can import every module."
import ast, re, subprocess, sys, tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OPTIONAL = {"fcntl"}   # POSIX-only standard library

def imported_top_levels(module_level=None) -> dict[str, set[str]]:
    "Top-level module names imported in llmnb/*.py (all, only at module level, or only inside functions), with their files."
    out = {}
    for py in (ROOT/"llmnb").glob("*.py"):
        tree = ast.parse(py.read_text()); top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if module_level is not None and (id(node) in top) != module_level: continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for n in names: out.setdefault(n.split(".")[0], set()).add(py.name)
    return out

def declared() -> set[str]:
    deps = tomllib.loads((ROOT/"pyproject.toml").read_text())["project"]["dependencies"]
    return {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}

def declared_extras() -> set[str]:
    extras = tomllib.loads((ROOT/"pyproject.toml").read_text())["project"]["optional-dependencies"]
    return {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower().replace("_", "-") for ds in extras.values() for d in ds}

def test_every_import_is_declared():
    dists, have = packages_distributions(), declared()
    missing = {}
    inner = imported_top_levels(module_level=False)   # imported inside a function: an optional extra may provide it
    for mod, files in imported_top_levels().items():
        if mod in sys.stdlib_module_names or mod in ("llmnb", "__future__") or mod in OPTIONAL: continue
        names = {d.lower().replace("_", "-") for d in dists.get(mod, [mod])}
        only_inner = mod in inner and mod not in imported_top_levels(module_level=True)
        if not names & (have | declared_extras() if only_inner else have): missing[mod] = sorted(files)
    assert not missing, f"imported but not in [project.dependencies]: {missing}"

def test_metadata_is_publishable():
    p = tomllib.loads((ROOT/"pyproject.toml").read_text())["project"]
    assert all("invalid" not in a.get("email", "") for a in p["authors"])
    assert "pip install llmnb\n" not in (ROOT/"README.md").read_text()   # not on PyPI: the README says how to install

def test_import_llmnb_stays_lazy():
    "`from llmnb import LLM, load_config` works, and `import llmnb` / the CLI parser load no torch."
    code = ("import sys, llmnb, llmnb.cli; llmnb.cli.parser(); assert 'torch' not in sys.modules, 'torch imported'; "
            "from llmnb import LLM, load_config; print(LLM.__module__, load_config.__module__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.split() == ["llmnb.api", "llmnb.config"], r.stderr[-2000:]
