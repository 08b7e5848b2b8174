"README.md says what nbs/index.ipynb says: it is generated from it and must be kept in sync."
import subprocess, sys
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]

def test_readme_in_sync_with_index():
    sys.path.insert(0, str(ROOT/'tools'))
    from make_readme import readme_text
    assert (ROOT/'README.md').read_text() == readme_text(), 'README.md is out of date: run `make readme` and commit it'

def test_readme_names_the_commands():
    txt = (ROOT/'README.md').read_text()
    for cmd in ('make demo', 'make test', 'make docs', '[tool.nbdev]'): assert cmd in txt
