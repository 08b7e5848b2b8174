"""Published outputs are true: notebooks whose outputs are deterministic are re-executed and their text outputs compared
with the committed ones (the docs site publishes the committed outputs).

`make nbtest` leaves these notebooks out (`NBTEST_SKIP` in the Makefile): this test runs them, slow cells included, so
each is executed once per `make test`. A stale output (a cell edited and not re-executed, an output pasted from
another cell) fails here with the cell id and both texts.
"""
import json, os, re, shutil
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
DETERMINISTIC = ['00_config.ipynb', '08_analysis.ipynb', '09_plots.ipynb', 'tutorials/04_fastai_timm.ipynb']
NEEDS_SHARED = {'08_analysis.ipynb', 'tutorials/04_fastai_timm.ipynb'}  # the fastai_timm CSV, seeded from ../shared


def _norm(text:str) -> str:
    "Text as compared: object addresses, trailing spaces and the venv's absolute path do not count."
    text = re.sub(r' at 0x[0-9a-f]+', ' at 0x…', text)
    return '\n'.join(l.rstrip() for l in text.replace(str(ROOT), '<root>').strip().splitlines())


def text_outputs(nb:dict) -> dict:
    "Code cell id -> its text outputs (stdout and text/plain), images and tables left out."
    res = {}
    for c in nb['cells']:
        if c['cell_type'] != 'code': continue
        parts = []
        for o in c.get('outputs', []):
            if o['output_type'] == 'stream' and o.get('name') == 'stdout': parts.append(''.join(o['text']))
            elif 'text/html' in o.get('data', {}): continue  # a table: pandas wraps its text to the terminal it guesses
            elif 'text/plain' in o.get('data', {}): parts.append(''.join(o['data']['text/plain']))
        res[c['id']] = _norm('\n'.join(parts))
    return res


def stale_cells(committed:dict, fresh:dict) -> list:
    "The cells whose committed text output differs from a fresh run's: (id, committed, fresh)."
    a, b = text_outputs(committed), text_outputs(fresh)
    return [(i, a[i], b.get(i)) for i in a if a[i] != b.get(i)]


def execute(name:str, tmp:Path) -> dict:
    "Run notebook `name` as nbdev-test does (slow cells too, `notest` ones not), in its own folder; the executed notebook."
    from nbdev.test import test_nb
    src = NBS/name
    copy = src.with_name(f'_fresh_{src.name}')  # same folder: relative paths resolve; `_` files are not nbdev's
    shutil.copy(src, copy)
    try:
        ok, _ = test_nb(copy, skip_flags=['notest'], force_flags=['slow'], save=True, cell_timeout=900)
        assert ok, f'{name} failed to run (see the traceback above)'
        return json.loads(copy.read_text())
    finally: copy.unlink(missing_ok=True)


def test_stale_output_is_found():
    "The comparison itself: an output copied from another cell is reported, equal outputs are not."
    nb = json.loads((NBS/'00_config.ipynb').read_text())
    assert stale_cells(nb, nb) == []
    stale = json.loads(json.dumps(nb))
    cells = [c for c in stale['cells'] if c['cell_type'] == 'code' and c.get('outputs')]
    cells[-1]['outputs'] = cells[0]['outputs']
    assert [s[0] for s in stale_cells(stale, nb)] == [cells[-1]['id']]


@pytest.mark.slow
@pytest.mark.parametrize('name', DETERMINISTIC)
def test_committed_outputs_are_what_a_fresh_run_prints(name, tmp_path):
    if name in NEEDS_SHARED and not (ROOT.parent/'shared'/'data').exists() and not os.environ.get('FINETUNE_KIT_CACHE'):
        pytest.skip('needs ../shared/data (the fastai_timm CSV)')
    committed = json.loads((NBS/name).read_text())
    stale = stale_cells(committed, execute(name, tmp_path))
    assert not stale, f'{name}: re-execute it and commit (nbdev-test {name} --flags slow --save):\n' + '\n'.join(
        f'--- cell {i}\ncommitted: {a[:400]!r}\nfresh:     {b[:400] if b else b!r}' for i, a, b in stale)
