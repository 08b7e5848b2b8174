"""The reliability suite's shared parts: the table of scenarios (printed at the end of the run, written to
tests/_out/reliability.md) and a pre-imported process that starts `finetune-kit` runs and sweeps in a fraction of a second."""
import json, os, subprocess, sys, time
from pathlib import Path
import pytest

HERE = Path(__file__).parent
ROWS_DIR = HERE.parent/'_out'/'reliability_rows'  # one JSON-lines file per test process; tests/conftest.py prints the table
ROWS = []   # this process's rows: scenario, tries, survived, lost, duplicated, max_error_s, note

def record_row(scenario:str, tries:int, survived:int, lost:int=0, duplicated:int=0, max_error_s:float|None=None, note:str=''):
    "Add a scenario's row to the table (and assert nothing was lost or duplicated)."
    ROWS.append(dict(scenario=scenario, tries=tries, survived=survived, lost=lost, duplicated=duplicated,
                     max_error_s=max_error_s, note=note, order=os.environ.get('PYTEST_CURRENT_TEST', '').split('::')[0]))
    ROWS_DIR.mkdir(parents=True, exist_ok=True)
    with open(ROWS_DIR/f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.jsonl", 'a') as f: f.write(json.dumps(ROWS[-1]) + '\n')
    assert lost == 0 and duplicated == 0, ROWS[-1]

@pytest.fixture
def record(): return record_row

class Zygote:
    "A process that imported finetune_kit, torch and fastai once and forks a child per job."
    def __init__(self, tmp:Path):
        self.tmp, self.n = Path(tmp), 0
        env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'FINETUNE_KIT_NO_CACHE': '1',
               'FINETUNE_KIT_CACHE': str(self.tmp/'kit_cache'), 'WANDB_MODE': 'offline', 'WANDB_SILENT': 'true',
               'MPLBACKEND': 'Agg', 'PYTHONUNBUFFERED': '1', 'PYTHONPATH': str(HERE.parent)}
        self.proc = subprocess.Popen([sys.executable, str(HERE/'_zygote.py')], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)
        assert self.proc.stdout.readline().strip() == 'ready'

    def start(self, fn:str, *args, env=None, cwd=None, kill=None, unprotect=(), **kwargs) -> dict:
        "Start `fn(*args, **kwargs)` in a fresh child; the job (with its `pid`, `log` and `rc_file`)."
        self.n += 1
        job = dict(fn=fn, args=[list(map(str, a)) if isinstance(a, (list, tuple)) else a for a in args], kwargs=kwargs,
                   env=env or {}, cwd=str(cwd) if cwd else None, kill=kill, unprotect=list(unprotect),
                   log=str(self.tmp/f'job{self.n}.log'), rc_file=str(self.tmp/f'job{self.n}.rc'))
        self.proc.stdin.write(json.dumps(job) + '\n'); self.proc.stdin.flush()
        job['pid'] = int(self.proc.stdout.readline())
        return job

    def wait(self, job:dict, timeout:float=120) -> int|None:
        "The child's exit code once it ended; None if it was killed (it wrote no exit code)."
        t = time.time()
        while alive(job['pid']):
            if time.time() - t > timeout:
                os.kill(job['pid'], 9); raise TimeoutError(f"job {job['fn']} {job['args']} ran over {timeout}s: {Path(job['log']).read_text()[-2000:]}")
            time.sleep(0.05)
        rc = Path(job['rc_file'])
        return int(rc.read_text()) if rc.exists() else None

    def run(self, fn:str, *args, timeout:float=120, **kw) -> tuple[int|None, str]:
        "Run a job to its end: (exit code or None when killed, its output)."
        job = self.start(fn, *args, **kw)
        rc = self.wait(job, timeout)
        return rc, Path(job['log']).read_text()

    def cli(self, *argv, **kw) -> tuple[int|None, str]:
        "`finetune-kit ARGV...` in a child: (exit code, output)."
        return self.run('finetune_kit.cli:main', [str(a) for a in argv], **kw)

    def close(self):
        self.proc.stdin.close(); self.proc.wait(10)

def alive(pid:int) -> bool:
    try: os.kill(pid, 0)
    except ProcessLookupError: return False
    try: return open(f'/proc/{pid}/stat').read().split()[2] != 'Z'
    except FileNotFoundError: return False

@pytest.fixture(scope='session')
def zygote(tmp_path_factory):
    z = Zygote(tmp_path_factory.mktemp('zygote'))
    yield z
    z.close()
