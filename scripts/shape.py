"""The shape of the code, as issue 10 measures it: exported-cell sizes, definitions per cell, saved outputs, function
lengths, private names crossing modules, and modules below `api` that reach up to it.
    python scripts/shape.py          (prints the figures; exits 0: a report, not a gate)"""
import ast, json, re, statistics, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPORT = re.compile(r"^#\|\s*export[si]?\b")

def exported_cells(nb):
    "Source of each exported code cell of notebook `nb`, without its `#|` lines."
    for c in json.loads(nb.read_text())["cells"]:
        src = "".join(c["source"]).splitlines()
        if c["cell_type"] == "code" and any(EXPORT.match(l) for l in src):
            yield [l for l in src if not l.startswith("#|") and l.strip()]

def definitions(lines):
    "Top-level definitions (functions, classes, assignments to names) in a cell's lines."
    try: tree = ast.parse("\n".join(lines))
    except SyntaxError: return 0
    return sum(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for n in tree.body)

def has_outputs(nb):
    "Does notebook `nb` carry any saved output?"
    return any(c.get("outputs") for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code")

def long_functions(limit=50):
    "(module, function, lines) for every function in llmnb/ longer than `limit` lines."
    for p in sorted((ROOT/"llmnb").glob("*.py")):
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > limit:
                yield p.stem, n.name, n.end_lineno - n.lineno + 1

def imports(p):
    "(module imported from, names) for each `from llmnb.x import ...` / `from .x import ...` in file `p`."
    for n in ast.walk(ast.parse(p.read_text())):
        if isinstance(n, ast.ImportFrom) and n.module and (n.level or n.module.startswith("llmnb")):
            yield n.module.removeprefix("llmnb.").lstrip("."), [a.name for a in n.names]

def crossings():
    "Private names imported from another module, and modules other than the top layers importing `api`."
    priv, up = [], []
    top = {"api", "cli", "widgets", "__init__", "_modidx", "demo", "serve", "export"}
    for p in sorted((ROOT/"llmnb").glob("*.py")):
        for mod, names in imports(p):
            priv += [f"{p.stem} ← {mod}.{n}" for n in names if n.startswith("_") and not n.startswith("__")]
            if mod == "api" and p.stem not in top: up.append(p.stem)
    return priv, up

def _all(tree):
    "The names in a module's `__all__`."
    for n in tree.body:
        if isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in n.targets):
            return set(ast.literal_eval(n.value))
    return set()

def without_docments():
    "Public functions (in `__all__`) with parameters, none of which carries a docment comment."
    for p in sorted((ROOT/"llmnb").glob("*.py")):
        if p.name.startswith("_"): continue
        src = p.read_text(); tree, lines = ast.parse(src), src.splitlines()
        for n in tree.body:
            if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) or n.name not in _all(tree): continue
            args = [a for a in n.args.args + n.args.kwonlyargs if a.arg not in ("self", "cls")]
            if args and not any("#" in lines[a.lineno-1][a.col_offset:] for a in args): yield f"{p.stem}.{n.name}"

def long_lines(limit=100):
    "(lines over `limit` characters, all lines) in the exported modules."
    ls = [l for p in (ROOT/"llmnb").glob("*.py") if p.name != "_modidx.py" for l in p.read_text().splitlines()]
    return sum(len(l) > limit for l in ls), len(ls)

def main():
    nbs = sorted((ROOT/"nbs").glob("*.ipynb"))
    cells = [c for nb in nbs for c in exported_cells(nb)]
    multi = sum(definitions(c) > 1 for c in cells)
    print(f"exported cells: {len(cells)}; median lines {statistics.median(len(c) for c in cells)}; "
          f"with more than one definition: {multi} ({100*multi/len(cells):.0f}%)")
    print("notebooks without saved outputs:", [nb.name for nb in nbs if not has_outputs(nb)] or "none")
    print("functions over 50 lines:", list(long_functions()) or "none")
    priv, up = crossings()
    print(f"private names imported across modules: {len(priv)}")
    for x in priv: print("  ", x)
    print("modules below api importing api:", sorted(set(up)) or "none")
    nodoc = list(without_docments())
    print(f"public functions without docments: {len(nodoc)}", " ".join(nodoc))
    n, tot = long_lines()
    print(f"lines over 100 characters: {n} of {tot} ({100*n/tot:.1f}%)")

if __name__ == "__main__": sys.exit(main())
