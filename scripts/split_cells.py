"""Split every exported notebook cell that holds several top-level definitions into one cell per definition.
    python split_cells.py [--write] NB...      (without --write: print what it would do, and the resulting shape)
A definition is a function, async function or class. Each piece starts at a definition (with its decorators and the
comment lines right above it); statements before the first definition stay with it, statements after a definition
stay with that definition. Each piece keeps the cell's `#|` directive lines. Order is unchanged, so the exported
module holds the same code."""
import ast, json, re, sys, uuid, statistics
from pathlib import Path

EXPORT = re.compile(r"^#\|\s*export[si]?\b")
DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)

def split_source(src: str):
    "The cell `src` as a list of pieces (each a source string), or None when it stays one cell."
    lines = src.splitlines(keepends=True)
    n_dir = 0
    while n_dir < len(lines) and lines[n_dir].startswith("#|"): n_dir += 1
    directives, body = lines[:n_dir], lines[n_dir:]
    if not any(EXPORT.match(l) for l in directives): return None
    try: tree = ast.parse("".join(body))
    except SyntaxError: return None
    defs = [n for n in tree.body if isinstance(n, DEFS)]
    if len(defs) < 2: return None
    starts = []
    for i, d in enumerate(defs):
        s = min([d.lineno] + [x.lineno for x in d.decorator_list]) - 1   # 0-based line of the def or decorator
        while s > 0 and body[s-1].lstrip().startswith("#") and not body[s-1].startswith("#|"): s -= 1
        if i == 0: s = 0
        starts.append(s)
    # a piece boundary must not fall inside another statement: check each start is at top level
    tops = {n.lineno - 1 for n in tree.body} | {min([n.lineno]+[x.lineno for x in getattr(n,'decorator_list',[])]) - 1 for n in tree.body}
    for s in starts[1:]:
        j = s
        while j < len(body) and (body[j].lstrip().startswith("#") or not body[j].strip()): j += 1
        if j not in tops: return None
    pieces = []
    for a, b in zip(starts, starts[1:] + [len(body)]):
        chunk = "".join(body[a:b]).rstrip("\n")
        if chunk.strip(): pieces.append("".join(directives) + chunk.lstrip("\n"))
    return pieces

def split_notebook(path: Path, write: bool) -> int:
    nb = json.loads(path.read_text())
    out, n = [], 0
    for c in nb["cells"]:
        pieces = split_source("".join(c["source"])) if c["cell_type"] == "code" else None
        if not pieces: out.append(c); continue
        n += 1
        for k, p in enumerate(pieces):
            new = dict(c, source=p.splitlines(keepends=True), outputs=[] if k < len(pieces) - 1 else c.get("outputs", []))
            if "id" in c: new["id"] = c["id"] if k == 0 else uuid.uuid4().hex[:8]
            out.append(new)
    if write and n:
        nb["cells"] = out
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return n

if __name__ == "__main__":
    write = "--write" in sys.argv
    for p in [a for a in sys.argv[1:] if not a.startswith("--")]:
        print(p, split_notebook(Path(p), write))
