"""Secrets and offline W&B runs: with a canary WANDB_API_KEY, nothing the kit writes (run and sweep folders, logs, reports,
W&B offline runs) contains it; offline runs of a finished and of a killed training read back with wandb's own reader."""
import json, os, subprocess, sys, time
from pathlib import Path
import pytest
from conftest import copy_sample
from .conftest import record_row

HERE = Path(__file__).parent
CANARY = 'canary0123456789abcdef0123456789abcdef0123'   # 40 characters, like a W&B key
TINY = ['--model_name', 'test_convnext', '--pretrained', 'false', '--img_size', '32', '--batch_size', '8', '--epochs', '2',
        '--freeze_epochs', '1', '--num_workers', '0', '--tracking', 'wandb']

def _hits(root:Path) -> list[str]:
    "Files under `root` containing the canary (as bytes: binary W&B logs and SQLite included)."
    return [str(f) for f in root.rglob('*') if f.is_file() and not f.is_symlink() and CANARY.encode() in f.read_bytes()]

@pytest.fixture(scope='module')
def runs(zygote, tmp_path_factory):
    "A finished and a killed training that log to W&B offline, a sweep, and two analyses, all with the canary key set."
    tmp = tmp_path_factory.mktemp('secrets')
    env = {'WANDB_API_KEY': CANARY, 'WANDB_MODE': 'offline', 'WANDB_DIR': str(tmp/'wandb_dir'), 'WANDB_CONFIG_DIR': str(tmp/'wandb_cfg'),
           'WANDB_CACHE_DIR': str(tmp/'wandb_cache'), 'WANDB_DATA_DIR': str(tmp/'wandb_data')}
    data = copy_sample(tmp/'data', 8, 3)
    logs = {}
    logs['finished'] = zygote.cli('train', '--data', data, '--out', tmp/'finished', *TINY, env=env)
    logs['killed'] = zygote.cli('train', '--data', data, '--out', tmp/'killed', *TINY, env=env, kill='batch:5')
    spec = {'method': 'random', 'name': 'sec', 'parameters': {'learning_rate': {'values': [1e-3, 2e-3]}, 'epochs': {'value': 2},
                                                              'tracking': {'value': 'wandb'}}}
    logs['sweep'] = zygote.run('finetune_kit.sweep:sweep', yaml_path=spec, count=2, out=str(tmp/'sweep'), preflight_check=False,
                               trainer_cmd=[sys.executable, str(HERE/'_fake_trainer.py')], env=env)
    logs['analyze sweep'] = zygote.cli('analyze', tmp/'sweep', '--out', tmp/'sweep_analysis', env=env)
    logs['analyze W&B runs'] = zygote.cli('analyze', tmp/'finished'/'wandb', '--out', tmp/'wandb_analysis', env=env)
    return tmp, logs

def test_no_secret_in_any_file(runs):
    tmp, logs = runs
    assert logs['finished'][0] == 0 and logs['killed'][0] is None and logs['sweep'][0] == 0, {k: v[1][-800:] for k, v in logs.items()}
    outs = [tmp/'finished', tmp/'killed', tmp/'sweep', tmp/'sweep_analysis', tmp/'wandb_analysis', tmp/'wandb_dir']
    written = [f for o in outs if o.exists() for f in o.rglob('*') if f.is_file()]
    hits = [h for o in outs if o.exists() for h in _hits(o)] + [k for k, (_, log) in logs.items() if CANARY in log]
    assert list((tmp/'finished'/'wandb').glob('offline-run-*/*.wandb')), 'no offline W&B run was written'
    record_row('secrets: canary WANDB_API_KEY in written files', len(written) + len(logs), len(written) + len(logs) - len(hits), 0, 0, None,
               f"{len(written)} files (2 trainings with W&B offline, a sweep, 2 analyses) and {len(logs)} logs grepped; analyze rc "
               f"{logs['analyze sweep'][0]}/{logs['analyze W&B runs'][0]}")
    assert not hits, hits

def test_offline_runs_read_back(runs):
    "`wandb sync --dry-run` accepts both offline runs (no server needed), and wandb's own reader loads them."
    from finetune_kit.tracking import read_offline_run
    tmp, logs = runs
    res = {}
    for name, planned in (('finished', 3), ('killed', None)):
        dry = subprocess.run([sys.executable, '-m', 'wandb', 'sync', '--dry-run', *map(str, (tmp/name/'wandb').glob('offline-run-*'))],
                             capture_output=True, text=True, timeout=120, env={**os.environ, 'WANDB_MODE': 'offline'})
        try:
            run = read_offline_run(tmp/name)
            n = len(run['history'])
            ok = n == planned and run['config'].get('model_name') == 'test_convnext' if planned else run['exit_code'] is None
            if not planned: n = f"{n} (config: {len(run['config'])} keys; the kit's history.csv and config.yaml hold them)"
            res[name] = (ok and dry.returncode == 0 and 'Would sync 1 run' in dry.stderr + dry.stdout,
                         f"sync --dry-run rc {dry.returncode}, epochs of history {n}, state {run['state']}, exit code {run['exit_code']}")
        except Exception as e: res[name] = (False, f'{type(e).__name__}: {e}')
    sync_line = 'wandb sync' in logs['finished'][1]
    record_row('offline W&B runs (finished; killed in epoch 2)', 3, sum(r[0] for r in res.values()) + sync_line, 0, 0, None,
               '; '.join(f'{k}: {v[1]}' for k, v in res.items()) + '; the finished run prints its `wandb sync` line')
    assert all(r[0] for r in res.values()) and sync_line, (res, logs['finished'][1][-500:])
