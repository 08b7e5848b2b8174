"""Write README.md from nbs/index.ipynb with nbconvert (nbdev-readme needs Quarto, which can't be installed here).

Usage: python tools/make_readme.py [--check]   (--check exits 1 when README.md is out of date)
"""
import re, sys, copy
from pathlib import Path
import nbformat
from nbconvert import MarkdownExporter

ROOT = Path(__file__).resolve().parents[1]

def readme_text(nb_path=ROOT/'nbs'/'index.ipynb') -> str:
    nb = nbformat.read(nb_path, as_version=4)
    cells = []
    for c in nb.cells:
        if c.cell_type == 'code':
            if re.search(r'^#\|\s*hide\b', c.source, re.M): continue
            c = copy.deepcopy(c)
            c.source = '\n'.join(l for l in c.source.splitlines() if not l.startswith('#|')).strip()
            c.outputs = [o for o in c.outputs if o.get('output_type') in ('execute_result', 'stream')]
        c = copy.deepcopy(c); c.metadata = {}
        cells.append(c)
    nb.cells = cells
    body, _ = MarkdownExporter(exclude_input_prompt=True, exclude_output_prompt=True).from_notebook_node(nb)
    body = re.sub(r'\n{3,}', '\n\n', body).strip() + '\n'
    body = re.sub(r'\]\((?![a-z]+://|/|#)([^)\s]+\.ipynb)\)', r'](nbs/\1)', body)  # notebook links, from the repo root
    return '<!-- generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file -->\n\n' + body

if __name__ == '__main__':
    txt, dest = readme_text(), ROOT/'README.md'
    if '--check' in sys.argv:
        ok = dest.exists() and dest.read_text() == txt
        print('README.md is up to date' if ok else 'README.md is out of date: run `make readme`')
        sys.exit(0 if ok else 1)
    dest.write_text(txt)
    print(f'wrote {dest}')
