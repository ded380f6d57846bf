"""Render the docs pages to plain HTML in `_html/`, where the Quarto binary (which `nbdev-docs` needs) is not installed.

    python scripts/render_html.py                 # every page (runs `nbdev-proc-nbs` first when `_proc/` is missing)
    python scripts/render_html.py --proc          # run `nbdev-proc-nbs` again first
    python scripts/render_html.py 13_demo index   # only these pages

It reads what the docs build reads: the processed notebooks in `_proc/` (hidden cells dropped, `show_doc` rendered),
converts each with nbconvert, and gives every page a title from its front matter and the sidebar of `nbs/sidebar.yml`.
Quarto-only markup (`::: {.callout}` fences, `{target=...}` link attributes, `#|` directives) is removed on the way.
"""
import argparse, html, re, subprocess, sys
from pathlib import Path

import nbformat
import yaml
from nbconvert import HTMLExporter
from nbconvert.preprocessors import TagRemovePreprocessor
from traitlets.config import Config

ROOT = Path(__file__).resolve().parent.parent
PROC, OUT = ROOT / "_proc", ROOT / "_html"
SITE = "https://llmnb.github.io/llmnb/"


def _frontmatter(nb) -> dict:
    "The YAML front matter nbdev puts in a raw first cell (title, description, output-file)."
    c = nb.cells[0] if nb.cells else None
    if c is None or c.cell_type != "raw" or not c.source.lstrip().startswith("---"): return {}
    nb.cells.pop(0)
    return yaml.safe_load(c.source.strip().strip("-")) or {}


def html_name(nb_path: Path) -> str:
    "The page name the docs site gives a notebook: `00_config.ipynb` -> `config.html` (nbdev strips the number)."
    return re.sub(r"^\d+[a-z]?_", "", nb_path.stem) + ".html"


def _links(text: str) -> str:
    "Point links at the local pages: `x.ipynb` and the hosted site's pages become relative `.html` links."
    text = text.replace(SITE, "")
    text = re.sub(r"(\]\()([\w./-]*?)(\d+[a-z]?_)?([\w-]+)\.ipynb", lambda m: f"{m[1]}{m[4]}.html", text)
    return re.sub(r"\]\(([\w-]+)\.html\.md\)", r"](\1.html)", text)


def _clean_markdown(text: str) -> str:
    text = "\n".join(l for l in text.splitlines() if not l.strip().startswith(":::"))
    return _links(re.sub(r"(\]\([^)]*\))\{[^}]*\}", r"\1", text))  # drop Quarto link attributes


def _prepare(nb) -> dict:
    "Turn a processed notebook into one nbconvert renders the way Quarto would. Returns its front matter."
    fm = _frontmatter(nb)
    for c in nb.cells:
        for k in [k for k in c if k not in ("cell_type", "metadata", "source", "outputs", "execution_count", "id", "attachments")]:
            del c[k]  # nbdev's processors leave private keys (`has_sd`) that nbformat rejects
        c.metadata.pop("execution", None)  # ... and timings that do not follow nbformat's schema
        if c.cell_type == "markdown": c.source = _clean_markdown(c.source)
        if c.cell_type != "code": continue
        lines = c.source.splitlines()
        directives = {l.replace(" ", "") for l in lines if l.startswith("#|")}
        c.source = "\n".join(l for l in lines if not l.startswith("#|")).strip()
        tags = c.metadata.setdefault("tags", [])
        if "#|echo:false" in directives or not c.source: tags.append("remove_input")
        if "#|output:false" in directives: tags.append("remove_output")
        for o in c.get("outputs", []):
            if "text/markdown" in o.get("data", {}): o["data"]["text/markdown"] = _clean_markdown(o["data"]["text/markdown"])
    head = f"# {fm.get('title', '')}\n\n> {fm.get('description', '')}" if fm.get("title") else ""
    if head: nb.cells.insert(0, nbformat.v4.new_markdown_cell(head))
    return fm


def _sidebar(current: str) -> str:
    "The site's sidebar as a plain HTML list."
    sb = yaml.safe_load((ROOT / "nbs" / "sidebar.yml").read_text())["website"]["sidebar"]["contents"]
    def item(entry):
        name = html_name(Path(entry))
        title = _titles.get(name, Path(name).stem).replace("`", "")
        style = ' style="font-weight:bold"' if name == current else ""
        return f'<li><a href="{name}"{style}>{html.escape(title)}</a></li>'
    parts = []
    for e in sb:
        if isinstance(e, str): parts.append(f"<ul>{item(e)}</ul>")
        else: parts.append(f"<p><b>{html.escape(e['section'])}</b></p><ul>" + "".join(item(x) for x in e["contents"]) + "</ul>")
    return ('<nav style="position:fixed;top:0;left:0;width:210px;height:100%;overflow:auto;padding:12px;'
            'font:14px sans-serif;border-right:1px solid #ddd;background:#fafafa">' + "".join(parts) + "</nav>")


_titles = {}


def render(nb_path: Path, exporter: HTMLExporter) -> Path:
    nb = nbformat.read(nb_path, as_version=4)
    fm = _prepare(nb)
    name = fm.get("output-file") or html_name(nb_path)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": fm.get("title", nb_path.stem)}})
    body = re.sub(r"(<body[^>]*>)", lambda m: m[1] + _sidebar(name) + '<div style="margin-left:240px">', body, count=1)
    body = body.replace("</body>", "</div></body>", 1)
    out = OUT / name
    out.write_text(body)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pages", nargs="*", help="notebook names (stems) to render; default: all")
    ap.add_argument("--proc", action="store_true", help="run nbdev-proc-nbs first")
    a = ap.parse_args(argv)
    if a.proc or not PROC.exists():
        r = subprocess.run(["nbdev-proc-nbs"], cwd=ROOT)
        if r.returncode: sys.exit("nbdev-proc-nbs failed: fix the notebook it names, then run this again")
    nbs = sorted(p for p in PROC.glob("*.ipynb") if not p.name.startswith("_"))
    for p in nbs:  # titles for the sidebar
        fm = _frontmatter(nbformat.read(p, as_version=4))
        _titles[fm.get("output-file") or html_name(p)] = fm.get("title", p.stem)
    if a.pages: nbs = [p for p in nbs if p.stem in a.pages]
    if not nbs: sys.exit(f"no processed notebooks to render in {PROC} (run with --proc)")
    c = Config()
    c.TagRemovePreprocessor.remove_input_tags = {"remove_input"}
    c.TagRemovePreprocessor.remove_all_outputs_tags = {"remove_output"}
    c.TagRemovePreprocessor.enabled = True
    c.HTMLExporter.exclude_input_prompt = c.HTMLExporter.exclude_output_prompt = True  # no `In [ ]:` gutters, as on the site
    exporter = HTMLExporter(config=c, template_name="lab")
    exporter.register_preprocessor(TagRemovePreprocessor(config=c), enabled=True)
    OUT.mkdir(exist_ok=True)
    for p in nbs: print(render(p, exporter).relative_to(ROOT))


if __name__ == "__main__": main()
