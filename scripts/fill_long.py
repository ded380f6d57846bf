"""Break lines over LIMIT characters in notebook code cells the way fastcore's code is written by hand:
at a comma inside brackets, filling each line, the rest aligned under its open bracket (or indented 4 when that
is too far right); a long plain string inside brackets is split at a space into adjacent literals.
Each changed cell must parse to the same AST, else it is left alone.
usage: python fill_long.py [--limit 100] nbs/*.ipynb
"""
import ast, io, json, sys, tokenize, argparse

OPEN, CLOSE = "([{", ")]}"
DOCSTRINGS = False

def toks(src):
    return list(tokenize.generate_tokens(io.StringIO(src).readline))

def line_info(src, row):
    "For physical line `row`: candidate breaks [(col_after_comma, align_col)], long strings [(tok)], open-bracket stack at start."
    stack, cands, strs = [], [], []
    ts = toks(src)
    for i, t in enumerate(ts):
        if t.type == tokenize.OP and t.string in OPEN:
            stack.append(t.end)
        elif t.type == tokenize.OP and t.string in CLOSE:
            if stack: stack.pop()
        if t.start[0] != row or t.end[0] != row: continue
        if t.type == tokenize.OP and t.string == "," and stack:
            nxt = ts[i + 1]
            if nxt.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE) or nxt.string in CLOSE: continue
            al = stack[-1]
            cands.append((t.end[1], al[1] if al[0] == row else None, len(stack)))
        if t.type == tokenize.STRING and stack: strs.append((t, stack[-1][1] if stack[-1][0] == row else None))
    return cands, strs

def indent_of(l): return len(l) - len(l.lstrip(" "))

def cont_indent(line, align, limit):
    "Under the open bracket when it opened on this line and is not too far right; else this line's indent (+4 when it opened here)."
    base = indent_of(line)
    if align is None: return base   # the bracket opened on an earlier line: this line is its continuation
    return align if align <= limit - 40 else base + 4

def break_once(lines, row, limit):
    "Break line `row` (1-based) once; True if it changed."
    src = "\n".join(lines) + "\n"
    try: cands, strs = line_info(src, row)
    except (tokenize.TokenError, IndentationError, SyntaxError): return False
    line = lines[row - 1]
    fit = [(c, a, d) for c, a, d in cands if c <= limit]
    if fit:
        wide = [x for x in fit if x[0] >= limit // 2] or fit
        c, a, _ = max(wide, key=lambda x: (-x[2], x[0]))   # the shallowest bracket, then the rightmost
        head, tail = line[:c].rstrip(), line[c:].lstrip()
        ind = cont_indent(line, a, limit)
        if ind + len(tail) >= len(line) or not head.strip(): return False
        lines[row - 1:row] = [head, " " * ind + tail]
        return True
    for t, a in strs:
        s0, s1 = t.start[1], t.end[1]
        if s0 >= limit - 10 or s1 <= limit: continue
        split = string_split(t.string, limit - s0)
        if split is None: continue
        left, right = split
        ind = cont_indent(line, a if a is not None else s0, limit)
        lines[row - 1:row] = [line[:s0] + left, " " * ind + right + line[s1:]]
        return True
    return False

def string_split(s, room):
    "Split a one-line string literal `s` into two adjacent literals, the first at most `room` characters."
    q = 0
    while q < len(s) and s[q] not in "'\"": q += 1
    prefix, quote = s[:q], s[q]
    if "b" in prefix.lower() or s[q:q + 3] in ('"""', "'''"): return None
    body = s[q + 1:-1]
    for k in range(min(room - len(prefix) - 2, len(body) - 1), 10, -1):
        if body[k - 1] != " " or body[k - 2] == "\\": continue
        left, right = body[:k], body[k:]
        if "f" in prefix.lower() and (left.count("{") - left.count("}") != 0): continue
        return f"{prefix}{quote}{left}{quote}", f"{prefix}{quote}{right}{quote}"
    return None

def docstrings(tree):
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body:
            d = n.body[0]
            if isinstance(d, ast.Expr) and isinstance(d.value, ast.Constant) and isinstance(d.value.value, str): yield d

def wrap_words(text, first_room, room):
    "Greedy word wrap: the first line gets `first_room` characters, the others `room`."
    out, cur = [], ""
    for w in text.split(" "):
        lim = first_room if not out else room
        if cur and len(cur) + 1 + len(w) > lim: out.append(cur); cur = w
        else: cur = f"{cur} {w}" if cur else w
    return out + [cur]

def wrap_docstring(lines, d, limit):
    "Rewrite docstring `d` (an ast.Expr) so that no line passes `limit`; False if it cannot."
    s, e, ind = d.lineno, d.end_lineno, d.col_offset
    seg = lines[s - 1:e]
    if not any(len(l) > limit for l in seg): return False
    if s == e:
        lit = seg[0][ind:d.end_col_offset]
        q = 0
        while lit[q] not in "'\"": q += 1
        prefix, body = lit[:q], lit[q + 1:-1]
        if lit[q:q + 3] in ('"""', "'''") or '"""' in body or body.endswith('"') or "\\n" in body: return False
        rest = seg[0][d.end_col_offset:]
        ws = wrap_words(body, limit - ind - len(prefix) - 3, limit - ind)
        ws[-1] += '"""' + rest
        new = [" " * ind + prefix + '"""' + ws[0]] + [" " * ind + w for w in ws[1:]]
        lines[s - 1:e] = new
        return True
    new = []
    for l in seg:
        if len(l) <= limit: new.append(l); continue
        li = indent_of(l)
        ws = wrap_words(l[li:], limit - li, limit - li)
        new += [" " * li + w for w in ws]
    lines[s - 1:e] = new
    return True

def normal(tree):
    "The AST with docstrings' whitespace collapsed (a wrapped docstring reads the same through inspect.getdoc)."
    for d in docstrings(tree): d.value.value = " ".join(d.value.value.split())
    return ast.dump(tree)

def headers(tree):
    "Lines of def/class headers (their docment comments must stay where they are)."
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): out |= set(range(n.lineno, n.body[0].lineno))
    return out

BLOCKS = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.ExceptHandler, ast.Try)

def split_one_liners(lines, tree, limit):
    "A long `if c: body` (for, while, with, try, except) on one line: the body goes on its own line below."
    todo = []
    for n in ast.walk(tree):
        if not isinstance(n, BLOCKS) or not n.body: continue
        b0, b1 = n.body[0], n.body[-1]
        if b0.lineno == n.lineno == b1.end_lineno and len(lines[n.lineno - 1]) > limit: todo.append((n.lineno, b0.col_offset))
    for r, c in sorted(set(todo), reverse=True):
        line = lines[r - 1]
        lines[r - 1:r] = [line[:c].rstrip(), " " * (indent_of(line) + 4) + line[c:]]

def lift_comments(lines, tree, limit):
    "A line long only because of its trailing comment: the comment goes on its own line above."
    hs, src = headers(tree), "\n".join(lines) + "\n"
    moves = []
    for t in toks(src):
        if t.type != tokenize.COMMENT: continue
        r, c = t.start; line = lines[r - 1]
        if len(line) <= limit or r in hs or not line[:c].strip() or len(line[:c].rstrip()) > limit: continue
        if t.string.startswith(("#|", "# noqa", "# type:")): continue
        moves.append((r, c, t.string))
    for r, c, com in sorted(moves, reverse=True):
        line = lines[r - 1]
        lines[r - 1:r] = [" " * indent_of(line) + com, line[:c].rstrip()]

def string_runs(src):
    "Runs of adjacent one-line string literals inside brackets, one per line: [(tokens, depth)]."
    runs, cur, depth = [], [], 0
    for t in toks(src):
        if t.type == tokenize.STRING and t.start[0] == t.end[0] and depth:
            if cur and t.start[0] != cur[-1].end[0] + 1: runs.append(cur); cur = []
            cur.append(t); continue
        if t.type in (tokenize.NL, tokenize.COMMENT) and cur and t.type == tokenize.NL: continue
        if cur: runs.append(cur); cur = []
        if t.type == tokenize.OP and t.string in OPEN: depth += 1
        elif t.type == tokenize.OP and t.string in CLOSE: depth -= 1
    return runs + ([cur] if cur else [])

def parts(s):
    q = 0
    while s[q] not in "'\"": q += 1
    return s[:q], s[q], s[q + 1:-1]

def safe_breaks(body, f):
    "Indices k (split before body[k]) right after a space, outside f-string braces and escapes."
    out, depth, i = [], 0, 0
    while i < len(body):
        ch = body[i]
        if ch == "\\": i += 2; continue
        if f and ch in "{}" and body[i:i + 2] in ("{{", "}}"): i += 2; continue
        if f and ch == "{": depth += 1
        elif f and ch == "}": depth -= 1
        elif ch == " " and not depth and i + 1 < len(body): out.append(i + 1)
        i += 1
    return out

def reflow_run(lines, run, limit):
    "Re-cut one run of string pieces so each line fills up to `limit`; False when it does not apply."
    rows = [t.start[0] for t in run]
    if not any(len(lines[r - 1]) > limit for r in rows): return False
    ps = [parts(t.string) for t in run]
    if len({(p.lower(), q) for p, q, _ in ps}) != 1 or ps[0][0].lower() not in ("", "f") or any(
        t.string[len(p):len(p) + 3] in ('"""', "'''") for t, (p, _, _) in zip(run, ps)): return False
    first, last = lines[rows[0] - 1], lines[rows[-1] - 1]
    if any(lines[r - 1][:t.start[1]].strip() for r, t in zip(rows[1:], run[1:])): return False
    if any(lines[r - 1][t.end[1]:].strip() for r, t in zip(rows[:-1], run[:-1])): return False
    P, q = ps[0][0], ps[0][1]; body = "".join(b for _, _, b in ps)
    col0 = run[0].start[1]; col = run[1].start[1] if len(run) > 1 else (col0 if col0 <= limit - 40 else indent_of(first) + 4)
    tail = last[run[-1].end[1]:]
    breaks, segs, start = safe_breaks(body, "f" in P.lower()), [], 0
    while True:
        room = (limit - (col0 if not segs else col)) - len(P) - 2
        if len(body) - start + (len(tail) if len(tail) <= 20 else 0) <= room: segs.append(body[start:]); break
        ok = [k for k in breaks if start < k <= start + room and k - start > 10]
        if not ok: segs.append(body[start:]); break
        segs.append(body[start:ok[-1]]); start = ok[-1]
    new = [first[:col0] + P + q + segs[0] + q] + [" " * col + P + q + x + q for x in segs[1:]]
    new[-1] += tail
    if new == lines[rows[0] - 1:rows[-1]]: return False
    lines[rows[0] - 1:rows[-1]] = new
    return True

def reflow_strings(lines, limit):
    for _ in range(50):
        try: runs = string_runs("\n".join(lines) + "\n")
        except (tokenize.TokenError, IndentationError, SyntaxError): return
        if not any(reflow_run(lines, r, limit) for r in reversed(runs)): return

def fix_cell(src, limit):
    try: tree = ast.parse(src)
    except SyntaxError: return src
    lines = src.split("\n")
    if DOCSTRINGS:
        for d in sorted(docstrings(tree), key=lambda d: -d.lineno): wrap_docstring(lines, d, limit)
    split_one_liners(lines, tree, limit)
    reflow_strings(lines, limit)
    try: lift_comments(lines, ast.parse("\n".join(lines)), limit)
    except SyntaxError: return src
    tree = normal(tree)
    for _ in range(200):
        longs = [i + 1 for i, l in enumerate(lines) if len(l) > limit]
        if not any(break_once(lines, r, limit) for r in longs): break
    out = "\n".join(lines)
    try: return out if normal(ast.parse(out)) == tree else src
    except SyntaxError: return src

def main():
    ap = argparse.ArgumentParser(); ap.add_argument("nbs", nargs="+"); ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--docstrings", action="store_true"); a = ap.parse_args()
    global DOCSTRINGS; DOCSTRINGS = a.docstrings
    for p in a.nbs:
        nb = json.load(open(p)); changed = 0
        for c in nb["cells"]:
            if c["cell_type"] != "code": continue
            src = "".join(c["source"]); new = fix_cell(src, a.limit)
            if new != src:
                changed += 1
                ls = new.split("\n")
                c["source"] = [l + "\n" for l in ls[:-1]] + ([ls[-1]] if ls[-1] else [])
        if changed:
            with open(p, "w") as f: json.dump(nb, f, indent=1, ensure_ascii=False); f.write("\n")
        print(p, changed)

if __name__ == "__main__": main()
