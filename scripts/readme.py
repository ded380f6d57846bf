"Write README.md from nbs/index.ipynb (Quarto's binary, which nbdev-readme needs, is not installable here)."
import sys
from pathlib import Path

try: from fastcore.nbio import read_nb  # execnb >= 0.3.4 moved nbio to fastcore
except ImportError: from execnb.nbio import read_nb

ROOT = Path(__file__).resolve().parent.parent

def render_readme(nb_path=ROOT/'nbs'/'index.ipynb'):
    "Markdown of `nb_path`: markdown cells as they are, code cells fenced, hidden cells and `#|` lines dropped."
    nb = read_nb(nb_path)
    out = ['<!-- Generated from nbs/index.ipynb by scripts/readme.py: edit the notebook, not this file. -->', '']
    for cell in nb.cells:
        src = cell.source.rstrip()
        if cell.cell_type == 'markdown': out += [src, '']; continue
        lines = src.splitlines()
        directives = [l for l in lines if l.startswith('#|')]
        if any(d.replace(' ', '') in ('#|hide', '#|echo:false', '#|include:false') for d in directives): continue
        code = '\n'.join(l for l in lines if not l.startswith('#|')).strip()
        if code: out += ['```python', code, '```', '']
        for o in cell.get('outputs', []):
            text = o.get('text') or o.get('data', {}).get('text/plain')
            if text: out += ['```', ''.join(text).rstrip(), '```', '']
    return '\n'.join(out).rstrip() + '\n'

def main():
    want = render_readme()
    readme = ROOT/'README.md'
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text() != want:
            sys.exit('README.md is stale: run `python scripts/readme.py` and commit it.')
        return print('README.md is current.')
    readme.write_text(want)

if __name__ == '__main__': main()
