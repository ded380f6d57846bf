"""The docs site: every public name is documented on its page, the sidebar lists every page, the config reference
tables cover every section of the schema, and README.md is current.

How nbdev documents a name (nbdev 3, `nbdev.processors.add_show_docs`): every top-level `def`/`class` with a public
name in a *visible* exported cell (`#| export`/`#| exports`, not `#| hide`, not `#| include: false`) gets a
`show_doc` cell added after it automatically, unless a `show_doc(name)` call already exists anywhere in the notebook.
So a name is documented when, after that processor has run, a `show_doc(name)` call sits in a visible cell. Two ways
to miss: the exported cell is hidden and no visible `show_doc` was written, or a `show_doc(name)` call sits in a
hidden cell (nbdev then adds none, and the hidden one is not rendered). Constants and type aliases in `__all__`
are not functions or classes: nbdev renders nothing for them, so the notebook's prose must name them.
"""
import ast, importlib, inspect, re, typing
from functools import lru_cache
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / "nbs"


def _modules():
    "(module name, notebook paths) for every generated module of llmnb: its chapter and every notebook whose cells it holds."
    out = []
    for py in sorted((ROOT / "llmnb").glob("*.py")):
        text = py.read_text()
        m = re.search(r"File to edit: \.\./nbs/(\S+\.ipynb)", text)
        # a cell may export to another chapter's module (`#| export tokens`): its docs are on the page that holds it
        nbs = dict.fromkeys([m.group(1)] + re.findall(r"^# %% \.\./nbs/(\S+\.ipynb)", text, re.M)) if m else {}
        # __init__ (written from index.ipynb) only re-exports LLM and load_config, documented in their own chapters
        if m and py.stem != "__init__": out.append((py.stem, tuple(NBS / n for n in nbs)))
    return out


MODULES = _modules()


def _visible(cell) -> bool:
    d = cell.directives_
    inc = d.get("include")
    inc = inc[0] if isinstance(inc, list) and inc else inc
    return "hide" not in d and str(inc).lower() != "false"


def _show_doc_names(source: str) -> set[str]:
    "Names in `show_doc(name)` calls of a code cell (`show_doc(LLM.train)` -> 'LLM.train')."
    try: tree = ast.parse(source)
    except SyntaxError: return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "show_doc" and node.args:
            names.add(ast.unparse(node.args[0]))
    return names


@lru_cache(None)
def _processed(nb_path: Path):
    "The notebook after nbdev's `add_show_docs` processor, as the docs build sees it."
    from nbdev.process import NBProcessor
    from nbdev.processors import add_show_docs
    proc = NBProcessor(nb_path, procs=[add_show_docs], rm_directives=False)
    proc.process()
    return proc.nb


def documented(nb_path: Path) -> set[str]:
    "Names the rendered page of `nb_path` documents."
    nb = _processed(nb_path)
    return {n for c in nb.cells if c.cell_type == "code" and _visible(c) for n in _show_doc_names(c.source)}


def exported_defs(nb_path: Path) -> set[str]:
    "Public functions, classes and patched methods (`LLM.train`) defined in exported cells of `nb_path`."
    from nbdev.showdoc import showdoc_nm
    nb = _processed(nb_path)
    out = set()
    for c in nb.cells:
        if c.cell_type != "code" or not ({"export", "exports"} & set(c.directives_)): continue
        try: tree = ast.parse("\n".join(l for l in c.source.splitlines() if not l.lstrip().startswith(("%", "!"))))
        except SyntaxError: continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                out.add(showdoc_nm(node))
    return out


def shown_text(nb_path: Path) -> str:
    "What a reader sees of `nb_path` besides exported code: its prose and its visible demo cells."
    nb = _processed(nb_path)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown" or
                     (c.cell_type == "code" and _visible(c) and not {"export", "exports", "exporti"} & set(c.directives_)))


def _is_alias(obj) -> bool:
    "A typing alias (`Annotated[...]`, `Union[...]`, `Literal[...]`): shown in the signatures and tables that use it."
    return typing.get_origin(obj) is not None or type(obj).__module__ == "typing"


def _is_def(obj) -> bool:
    return inspect.isfunction(obj) or (inspect.isclass(obj) and typing.get_origin(obj) is None)


@pytest.mark.parametrize("module,nb", MODULES, ids=[m for m, _ in MODULES])
def test_public_functions_and_classes_are_documented(module, nb):
    mod = importlib.import_module(f"llmnb.{module}")
    shown = set().union(*map(documented, nb))
    names = [n for n in getattr(mod, "__all__", []) if _is_def(getattr(mod, n))]
    names += sorted(set().union(*map(exported_defs, nb)) - set(names))  # patched methods too: `LLM.train` is public API
    missing = [n for n in names if n not in shown]
    assert not missing, (f"{[str(p.relative_to(ROOT)) for p in nb]}: {missing} have no rendered docs: their exported cell is hidden "
                         "(add a visible `show_doc(name)` cell) or their `show_doc` sits in a hidden cell")


@pytest.mark.parametrize("module,nb", MODULES, ids=[m for m, _ in MODULES])
def test_public_constants_are_shown(module, nb):
    mod = importlib.import_module(f"llmnb.{module}")
    text = "\n".join(map(shown_text, nb))
    missing = [n for n in getattr(mod, "__all__", []) if not _is_def(getattr(mod, n)) and not _is_alias(getattr(mod, n))
               and not re.search(rf"\b{re.escape(n)}\b", text)]
    assert not missing, (f"{[str(p.relative_to(ROOT)) for p in nb]}: public constants {missing} are neither named in the text nor shown in a "
                         "visible cell (nbdev renders nothing for a constant): name them, show them, or make them _private")


def test_checker_sees_hidden_exports():
    "The checker itself: a hidden exported function is undocumented; a visible one, or one with show_doc, is."
    import nbformat, tempfile
    cells = [nbformat.v4.new_code_cell("#| default_exp x"),
             nbformat.v4.new_code_cell("#| export\n#| hide\ndef hidden_fn(): pass"),
             nbformat.v4.new_code_cell("#| export\ndef visible_fn(): pass"),
             nbformat.v4.new_code_cell("#| exporti\n#| hide\ndef shown_fn(): pass"),
             nbformat.v4.new_code_cell("#| export\n#| hide\ndef hidden_doc_fn(): pass"),
             nbformat.v4.new_code_cell("#| hide\nshow_doc(hidden_doc_fn)"),
             nbformat.v4.new_code_cell("show_doc(shown_fn)")]
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.ipynb"
        nbformat.write(nbformat.v4.new_notebook(cells=cells), p)
        shown = documented(p)
        assert {"visible_fn", "shown_fn"} <= shown
        assert not {"hidden_fn", "hidden_doc_fn"} & shown
        assert {"hidden_fn", "visible_fn", "hidden_doc_fn"} <= exported_defs(p)


# -- the sidebar and the site config

def _sidebar_entries(contents):
    for e in contents:
        if isinstance(e, str): yield e
        elif isinstance(e, dict):
            if "href" in e: yield e["href"]
            yield from _sidebar_entries(e.get("contents", []))


def _sidebar():
    return yaml.safe_load((NBS / "sidebar.yml").read_text())["website"]["sidebar"]


def test_quarto_config_is_valid():
    q = yaml.safe_load((NBS / "_quarto.yml").read_text())
    assert q["project"]["type"] == "website"
    for f in q.get("metadata-files", []): assert (NBS / f).exists(), f"_quarto.yml names {f}, which is missing"
    assert "sidebar.yml" in q["metadata-files"]


def test_sidebar_lists_every_page_once():
    entries = list(_sidebar_entries(_sidebar()["contents"]))
    assert not [e for e in entries if not (NBS / e).exists()], "sidebar.yml names pages that do not exist"
    dup = {e for e in entries if entries.count(e) > 1}
    assert not dup, f"listed twice in sidebar.yml: {dup}"
    pages = sorted(p.name for p in NBS.glob("*.ipynb") if not p.name.startswith("_"))
    missing = [p for p in pages if p not in entries]
    assert not missing, f"add {missing} to nbs/sidebar.yml (Guides for a config section, API reference otherwise)"


def test_sidebar_sections():
    sections = {e["section"]: list(_sidebar_entries(e["contents"])) for e in _sidebar()["contents"] if isinstance(e, dict)}
    assert list(sections) == ["Tutorials", "Guides", "API reference"]
    assert "tutorial_first_finetune.ipynb" in sections["Tutorials"]
    assert {"00_config.ipynb", "06_api.ipynb"} <= set(sections["API reference"])


def test_every_page_has_title_and_subtitle():
    bad = []
    for p in sorted(NBS.glob("*.ipynb")):
        if p.name.startswith("_"): continue
        md = next((c for c in _processed(p).cells if c.cell_type == "markdown"), None)
        src = md.source if md is not None else ""
        if not re.search(r"^# \S", src, re.M) or not re.search(r"^> \S", src, re.M): bad.append(p.name)
    assert not bad, f"the first markdown cell needs an H1 title and a `> subtitle` line: {bad}"


# -- the config reference

def _section_models(model, seen=None):
    "Every pydantic model reachable from `model`'s fields."
    seen = set() if seen is None else seen
    def walk(ann):
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            if ann not in seen: seen.add(ann); _section_models(ann, seen)
        for a in typing.get_args(ann): walk(a)
    for f in model.model_fields.values(): walk(f.annotation)
    return seen


def test_config_reference_tables_cover_every_section():
    from llmnb.config import LLMConfig
    tabled = set()
    for p in NBS.glob("*.ipynb"):
        for c in _processed(p).cells:
            if c.cell_type == "code" and _visible(c): tabled |= set(re.findall(r"config_fields_table\((\w+)\)", c.source))
    models = {m.__name__ for m in _section_models(LLMConfig)} | {"LLMConfig"}
    missing = sorted(models - tabled)
    assert not missing, f"no `config_fields_table(...)` cell renders these config sections: {missing}"


# -- README

def test_readme_is_current():
    import runpy
    render = runpy.run_path(str(ROOT / "scripts" / "readme.py"))["render_readme"]
    assert (ROOT / "README.md").read_text() == render(NBS / "index.ipynb"), "run `python scripts/readme.py`"


def test_readme_names_the_two_commands():
    text = (ROOT / "README.md").read_text()
    for cmd in ("bash scripts/demo.sh", "bash scripts/test.sh"):
        assert cmd in text and (ROOT / cmd.split()[1]).exists(), cmd
    assert "[tool.nbdev]" in text and "settings.ini" in text
