"""Killed training: SIGKILL at random points (data check, mid-epoch, mid-write of the checkpoint, the weights, the bundle's
JSON, the state), then the same command with `--resume`: the run completes, no file is ever half-written, and the final
metrics equal an uninterrupted run's within 1e-4 (1 torch thread, same seed)."""
import json, os, random, shutil, time
from pathlib import Path
import pandas as pd, pytest, torch
from conftest import copy_sample
from .conftest import record_row

ARGS = ['--model_name', 'test_convnext', '--pretrained', 'false', '--img_size', '32', '--batch_size', '8', '--epochs', '2',
        '--freeze_epochs', '1', '--learning_rate', '0.01', '--num_workers', '0', '--seed', '7']
METRICS = ('valid_loss', 'accuracy', 'error_rate', 'precision', 'recall', 'f1')
N_FILES, N_BATCHES, N_EPOCHS = 33, 9, 3   # 8+3 images x 3 classes; 24 training images / 8 = 3 batches x 3 epochs

def _data(root:Path) -> Path: return copy_sample(root, 8, 3)

def _train(zygote, data, out, *extra, **kw):
    return zygote.cli('train', '--data', data, '--out', out, *ARGS, *extra, **kw)

def half_written(out:Path) -> list[str]:
    "The kit's files in `out` that exist but cannot be read back (a write cut in the middle)."
    from safetensors.torch import load_file
    readers = {'checkpoint/last.pth': lambda p: torch.load(p, weights_only=True), 'checkpoint/state.json': lambda p: json.loads(p.read_text()),
               'model/model.safetensors': lambda p: load_file(str(p)), 'model/model.json': lambda p: json.loads(p.read_text()),
               'metrics.json': lambda p: json.loads(p.read_text()), 'config.yaml': lambda p: __import__('yaml').safe_load(p.read_text())}
    bad = []
    for name, read in readers.items():
        if (out/name).exists():
            try: read(out/name)
            except Exception as e: bad.append(f'{name}: {type(e).__name__}')
    return bad

def kill_points(seed:int=15) -> list[str]:
    "One seeded random moment of each kind."
    rng = random.Random(seed)
    per_epoch = N_BATCHES // N_EPOCHS   # a batch in each epoch: the frozen one, the first unfrozen one (a new phase), the last
    return [f'check:{rng.randint(1, N_FILES)}', *(f'batch:{e * per_epoch + rng.randint(1, per_epoch)}' for e in range(N_EPOCHS)),
            f'checkpoint:{rng.randint(1, N_EPOCHS)}', 'weights:1', 'write:model.json:1', f'write:state.json:{rng.randint(1, N_EPOCHS)}']

def _compare(out:Path, base:Path) -> list[str]:
    "How the finished run in `out` differs from the uninterrupted one in `base` (empty: equal within 1e-4)."
    m, b = json.loads((out/'metrics.json').read_text()), json.loads((base/'metrics.json').read_text())
    diffs = [f'{k}: {m.get(k)} vs {b[k]}' for k in METRICS if m.get(k) is None or abs(m[k] - b[k]) > 1e-4]
    h, hb = pd.read_csv(out/'history.csv'), pd.read_csv(base/'history.csv')
    if list(h.epoch) != list(hb.epoch): diffs.append(f'epochs logged {list(h.epoch)} vs {list(hb.epoch)}')
    elif (h.valid_loss - hb.valid_loss).abs().max() > 1e-4: diffs.append(f'valid_loss per epoch {list(h.valid_loss)} vs {list(hb.valid_loss)}')
    return diffs

def kill_and_resume(zygote, tmp:Path, base:Path, point:str, unprotect=()) -> dict:
    "One try: train until killed at `point`, check the files, recover with the same command (plus --resume), compare."
    data, out = _data(tmp/'data'), tmp/'run'
    rc, log = _train(zygote, data, out, kill=point, unprotect=unprotect)
    assert rc is None, f'{point}: the run was not killed (rc {rc}): {log[-1500:]}'
    res = dict(point=point, half=half_written(out), error_s=None)
    if (out/'config.yaml').exists():   # a plain rerun must refuse the used folder, in one line, pointing at --resume
        t = time.time(); rc, log = _train(zygote, data, out)
        res['error_s'] = time.time() - t
        assert rc == 2 and '--resume' in log and 'Traceback' not in log, log[-1500:]
        rc, log = zygote.cli('train', '--resume', '--out', out, unprotect=unprotect)
    else: rc, log = _train(zygote, data, out, unprotect=unprotect)   # killed before the run folder existed: the same command
    res.update(rc=rc, log=log[-1500:], finished=rc == 0 and (out/'metrics.json').exists())
    res['diffs'] = _compare(out, base) if res['finished'] else ['did not finish']
    h = pd.read_csv(out/'history.csv') if (out/'history.csv').exists() else pd.DataFrame({'epoch': []})
    res['duplicated'] = int(h.epoch.duplicated().sum())
    return res

@pytest.fixture(scope='module')
def baseline(zygote, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('base')
    rc, log = _train(zygote, _data(tmp/'data'), tmp/'run')
    assert rc == 0, log[-2000:]
    return tmp/'run'

def test_killed_training_resumes_exactly(zygote, baseline, tmp_path):
    tries = []
    for i, point in enumerate(kill_points()):
        tries.append(kill_and_resume(zygote, tmp_path/f't{i}', baseline, point))
    bad = [t for t in tries if t['half'] or t['diffs'] or t['rc'] != 0]
    lost = sum(not t['finished'] for t in tries) + sum(bool(t['half']) for t in tries)
    record_row('killed training (SIGKILL + --resume)', len(tries), len(tries) - len(bad), lost, sum(t['duplicated'] for t in tries),
               max([t['error_s'] for t in tries if t['error_s']] or [0]),
               'real tiny runs: ' + ', '.join(t['point'] for t in tries) + '; metrics == uninterrupted within 1e-4; error = plain rerun refused')
    assert not bad, [(t['point'], t['half'], t['diffs'], t['log'] if t['rc'] else '') for t in bad]

def test_checkpoint_and_bundle_writes_are_fsynced(tmp_path, monkeypatch):
    "Each file the kit writes atomically is flushed to disk (fsync) before it is renamed into place."
    import timm
    from finetune_kit import training
    synced, renamed = [], []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, 'fsync', lambda fd: (synced.append(os.readlink(f'/proc/self/fd/{fd}')), real_fsync(fd))[1])
    monkeypatch.setattr(os, 'replace', lambda a, b: (renamed.append((str(a), str(b), str(a) in synced)), real_replace(a, b))[1])
    training.save_weights(timm.create_model('test_convnext', pretrained=False, num_classes=2), tmp_path/'model'/'model.safetensors')
    training._write_atomic(tmp_path/'model'/'model.json', '{}')
    assert [Path(b).name for a, b, _ in renamed] == ['model.safetensors', 'model.json'] and all(ok for *_, ok in renamed), renamed
    assert str(tmp_path/'model') in synced   # the folder too, so the rename itself survives a power cut
