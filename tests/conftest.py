import json, os, sys, subprocess, shutil
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
os.environ.setdefault('WANDB_MODE', 'offline')
os.environ.setdefault('WANDB_SILENT', 'true')
os.environ.setdefault('MPLBACKEND', 'Agg')
if os.environ.get('PYTEST_XDIST_WORKER'):  # several test processes share the cores: each runs its torch (and its children's) on its share
    os.environ.setdefault('OMP_NUM_THREADS', str(max(1, (os.cpu_count() or 1) // int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1')))))

def run_cli(*args, env=None, timeout=900, cwd=None):
    "Run the `finetune-kit` console script; return the CompletedProcess."
    e = {**os.environ, **(env or {})}
    return subprocess.run([str(BIN/'finetune-kit'), *map(str, args)], capture_output=True, text=True,
                          env=e, timeout=timeout, cwd=cwd)

@pytest.fixture
def cli(): return run_cli

def copy_sample(root:Path, n_train:int, n_valid:int, classes=('Trouser', 'Bag', 'Sneaker')) -> Path:
    "The first `n_train`/`n_valid` real Fashion-MNIST images of `classes` from `sample`, as train/ and valid/ folders."
    from finetune_kit.datasets import sample_subset
    return sample_subset(root, n_train, n_valid, classes)


# The reliability suite's table (tests/reliability/): its tests append rows to one file per test process (pytest-xdist
# runs several); this process, the one that reports, gathers them at the end.
RELIABILITY_ROWS, RELIABILITY_MD = ROOT/'tests'/'_out'/'reliability_rows', ROOT/'tests'/'_out'/'reliability.md'

def pytest_sessionstart(session):
    if not os.environ.get('PYTEST_XDIST_WORKER'): shutil.rmtree(RELIABILITY_ROWS, ignore_errors=True)  # rows of this run only

def reliability_table(rows:list) -> str:
    head = '| scenario | tries | survived | lost | duplicated | longest time to a clear error | note |\n|---|---:|---:|---:|---:|---:|---|\n'
    fmt = lambda v: '-' if v is None else f'{v:.2f} s'
    return head + ''.join(f"| {r['scenario']} | {r['tries']} | {r['survived']} | {r['lost']} | {r['duplicated']} | "
                          f"{fmt(r['max_error_s'])} | {r['note']} |\n" for r in rows)

def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if os.environ.get('PYTEST_XDIST_WORKER') or not RELIABILITY_ROWS.exists(): return
    rows = [json.loads(l) for f in sorted(RELIABILITY_ROWS.glob('*.jsonl')) for l in f.read_text().splitlines()]
    if not rows: return
    md = reliability_table(sorted(rows, key=lambda r: r['order']))  # stable: each file's rows in its recording order
    RELIABILITY_MD.write_text('# Reliability suite\n\n' + md)
    terminalreporter.write_sep('=', 'reliability: what the kit survives')
    terminalreporter.write(md)
