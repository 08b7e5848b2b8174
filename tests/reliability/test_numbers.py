"""Numbers that go wrong: NaN and inf losses, a learning rate of 10: the run's status is `failed` with the reason, and a
sweep goes on without counting them (an inf metric is never a completed trial)."""
import json, math, sys, time
from pathlib import Path
import optuna, pandas as pd, pytest, torch
from conftest import copy_sample
from finetune_kit.sweep import trial_outcome
from .conftest import record_row

HERE = Path(__file__).parent
FAKE = [sys.executable, str(HERE/'_fake_trainer.py')]
TINY = ['--model_name', 'test_convnext', '--pretrained', 'false', '--img_size', '32', '--batch_size', '8', '--epochs', '2',
        '--num_workers', '0']

OUTCOMES = [  # (exit code, metrics.json or None, completed?)
    *[(0, {'valid_loss': v, 'status': 'completed'}, ok) for v, ok in
      ((0.3, True), (float('nan'), False), (float('inf'), False), (float('-inf'), False), ('NaN', False), ('inf', False),
       ('Infinity', False), (None, False), ('', False), ('0.25', True), (1e308, True), (-0.0, True))],
    (0, {'status': 'completed'}, False), (0, None, False), (0, {'valid_loss': 0.2, 'status': 'failed: nan loss'}, False),
    (1, {'valid_loss': 0.2, 'status': 'completed'}, False), (1, {'status': 'failed: nan loss'}, False), (1, None, False),
    (-9, None, False), (2, None, False), (0, {'valid_loss': 0.2, 'status': 'stopped: 1/3 epochs'}, False),
    (0, {'valid_loss': [0.2], 'status': 'completed'}, False), (0, {'valid_loss': {'v': 1}, 'status': 'completed'}, False),
    (0, {'valid_loss': True, 'status': 'completed'}, True)]

def test_trial_outcomes(tmp_path):
    "Every way a trial's numbers can go wrong, judged as the sweep judges them: only finite metrics complete a trial."
    wrong, worst = [], 0.
    for i, (rc, m, ok) in enumerate(OUTCOMES):
        d = tmp_path/f'{i}'; d.mkdir()
        if m is not None: (d/'metrics.json').write_text(json.dumps(m))
        (d/'log.txt').write_text('training failed: nan loss\n')
        t = time.time(); status, _ = trial_outcome(rc, d, 'valid_loss'); worst = max(worst, time.time() - t)
        if (status == 'completed') != ok or (not ok and not (status.startswith('failed') or status.startswith('stopped')) or len(status) < 10 and not ok):
            wrong.append((rc, m, status))
    record_row('numbers: trial outcomes (nan/inf/missing metric)', len(OUTCOMES), len(OUTCOMES) - len(wrong), 0, 0, worst,
               'each judged completed only when its metric is finite; the others failed with the reason')
    assert not wrong, wrong

def test_sweep_goes_on_past_nan_and_inf(zygote, tmp_path):
    lrs = [1e-3, 5.0, 0.5, 2e-3, 3.0, 3e-3, 0.6, 7.0, 4e-3, 0.9]
    spec = {'method': 'grid', 'name': 'nums', 'metric': {'name': 'valid_loss', 'goal': 'minimize'},
            'parameters': {'learning_rate': {'values': lrs}, 'epochs': {'value': 2}}}
    out = tmp_path/'sw'
    rc, log = zygote.run('finetune_kit.sweep:sweep', yaml_path=spec, out=str(out), trainer_cmd=FAKE, preflight_check=False,
                         max_failures=20, verbose=False)
    assert rc == 0, log[-2000:]
    r = pd.read_csv(out/'results.csv')
    done, failed = r[r.state == 'COMPLETE'], r[r.state == 'FAIL']
    should_fail = {lr for lr in lrs if lr >= 0.5}
    wrong = [row.learning_rate for row in r.itertuples() if (row.state == 'FAIL') != (row.learning_rate in should_fail)]
    reasons = [s for s in failed.status if not ('nan' in s or 'inf' in s)]
    record_row('numbers: sweep with nan/inf trials', len(r), len(r) - len(wrong) - len(reasons), 0,
               int(r.learning_rate.duplicated().sum()), None,
               f'{len(done)} completed, {len(failed)} failed (nan: exit 1; inf valid_loss with exit 0), sweep ran all {len(lrs)}')
    assert len(r) == len(lrs) and not wrong and not reasons and done.valid_loss.map(math.isfinite).all(), r[['learning_rate', 'state', 'status']]

def test_real_runs_with_inf_loss_and_lr_10(zygote, tmp_path):
    "A real tiny run whose loss turns inf, and one at learning rate 10: never 'completed' with a non-finite metric."
    data = copy_sample(tmp_path/'data', 8, 3)
    rows = []
    t = time.time()
    rc, log = zygote.run('reliability._jobs:train_with_inf', str(data), str(tmp_path/'inf'), model_name='test_convnext',
                         pretrained=False, img_size=32, batch_size=8, epochs=2, num_workers=0, learning_rate=0.01)
    m = json.loads((tmp_path/'inf'/'metrics.json').read_text())
    rows.append(('inf loss', rc == 3 and m['status'].startswith('failed') and 'valid_loss' not in m, time.time() - t, m['status']))
    t = time.time()
    rc, log = zygote.cli('train', '--data', data, '--out', tmp_path/'lr10', *TINY, '--learning_rate', '10')
    rows.append(('learning_rate 10', rc == 2 and 'learning_rate=10.0 must be in' in log, time.time() - t, 'refused before training'))
    t = time.time()
    rc, log = zygote.cli('train', '--data', data, '--out', tmp_path/'lr9', *TINY, '--learning_rate', '9.9')
    m = json.loads((tmp_path/'lr9'/'metrics.json').read_text())
    finite = all(isinstance(m.get(k), float) and math.isfinite(m[k]) for k in ('valid_loss', 'accuracy'))
    ok = (rc == 0 and m['status'] == 'completed' and finite) or (rc == 2 and m['status'].startswith('failed') and 'training failed' in log)
    rows.append(('learning_rate 9.9', ok, time.time() - t, m['status']))
    record_row('numbers: real runs (inf loss, lr 10)', len(rows), sum(r[1] for r in rows), 0, 0, max(r[2] for r in rows),
               '; '.join(f'{n}: {s}' for n, _, _, s in rows))
    assert all(r[1] for r in rows), rows

@pytest.mark.skipif(not torch.cuda.is_available(), reason='fp16 overflow needs a CUDA GPU (mixed precision is off on a CPU); none here')
def test_fp16_overflow_on_gpu(): pass
