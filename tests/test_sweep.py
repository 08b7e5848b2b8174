"""Sweeps end to end: validation, samplers, pruning, failures, kill-and-resume, parallel workers, pre-flight.

Most engine tests use a stand-in trainer (`fake_trainer`, a 30-line script that writes the run folder contract:
history.csv row by row, metrics.json, exit codes), so they take seconds. The tests marked `real` run the same
behaviours with the real `finetune-kit train` on a tiny timm test model."""
import dataclasses, json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import optuna, pandas as pd, pytest, yaml
from optuna.trial import TrialState, create_trial
from finetune_kit.sweep_spec import validate_sweep, SWEEP_EXAMPLE, suggest_config, make_sampler
from finetune_kit.sweep_pruner import WandbHyperband, hyperband_bands, make_pruner, replay_pruner
from finetune_kit.sweep import SweepStopped, open_study, results_table, sweep
from finetune_kit.cli import cmd_sweep, main

FAKE = textwrap.dedent('''
    import argparse, json, math, os, sys, time, yaml
    ap = argparse.ArgumentParser(); ap.add_argument('--config'); ap.add_argument('--out'); a = ap.parse_args()
    cfg, out = yaml.safe_load(open(a.config)), a.out
    open(os.path.join(out, 'pid'), 'w').write(str(os.getpid()))
    open(os.path.join(out, 'threads'), 'w').write(os.environ.get('OMP_NUM_THREADS', ''))
    open(os.path.join(out, 'entity'), 'w').write(os.environ.get('WANDB_ENTITY', ''))
    open(os.path.join(out, 'gpu'), 'w').write(os.environ.get('CUDA_VISIBLE_DEVICES', 'unset'))
    open(os.path.join(out, 'start'), 'w').write(repr(time.time()))
    if os.environ.get('CUDA_VISIBLE_DEVICES') == os.environ.get('FAKE_BAD_GPU', 'none'):
        print('RuntimeError: CUDA error: an illegal memory access was encountered'); sys.exit(1)
    if cfg.get('tracking') == 'wandb': os.makedirs(os.path.join(out, 'wandb', 'offline-run-20250101_000000-x' + os.path.basename(out)))
    lr, epochs, bs = cfg['learning_rate'], cfg.get('epochs', 3), cfg.get('batch_size', 32)
    if bs == 13: raise RuntimeError('boom: batch_size 13')
    hist = os.path.join(out, 'history.csv')
    with open(hist, 'w') as f: f.write('phase,epoch,train_loss,valid_loss,error_rate,time_s\\n')
    for e in range(epochs):
        time.sleep(float(os.environ.get('FAKE_EPOCH_S', '0')))
        loss = float('nan') if lr > 1 else (math.log10(lr) + 2.5)**2 + 1/(e + 1)
        with open(hist, 'a') as f: f.write(f'fine_tune,{e},{loss},{loss},0.5,0.1\\n')
        if math.isnan(loss):
            json.dump({'status': 'failed: nan loss'}, open(os.path.join(out, 'metrics.json'), 'w'))
            print('training failed: nan loss'); sys.exit(1)
    time.sleep(float(os.environ.get('FAKE_FINISH_S', '0')))   # a real trainer evaluates and saves after its last epoch
    json.dump({'valid_loss': loss, 'error_rate': 0.5, 'fit_time_s': 0.1, 'peak_mem_mb': 10.0, 'status': 'completed'},
              open(os.path.join(out, 'metrics.json'), 'w'))
    open(os.path.join(out, 'end'), 'w').write(repr(time.time()))
''')

@pytest.fixture
def fake(tmp_path):
    "The stand-in trainer's command"
    p = tmp_path/'fake_trainer.py'
    p.write_text(FAKE)
    return [sys.executable, str(p)]

@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv('WANDB_MODE', 'offline')
    monkeypatch.setenv('FAKE_EPOCH_S', '0')
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)

def _yaml(tmp_path, text, name='s.yaml'):
    p = tmp_path/name
    p.write_text(textwrap.dedent(text))
    return p

def _results(out): return pd.read_csv(Path(out)/'results.csv')

def _study(out, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{Path(out).resolve()/'study.db'}")

# --- validation -------------------------------------------------------------------------------------------------

GOOD = """\
method: bayes
metric: {name: valid_loss, goal: minimize}
parameters:
  learning_rate: {distribution: log_uniform_values, min: 0.0001, max: 0.01}
  batch_size: {values: [16, 32]}
"""

@pytest.mark.parametrize('line,old,new,expect', [
    (1, 'method: bayes', 'method: bayesian', "line 1: method: method must be grid, random or bayes"),
    (2, 'valid_loss', 'val_loss', "line 2: metric.name: unknown metric 'val_loss'"),
    (2, 'minimize', 'minimise', "line 2: metric.goal: goal must be minimize or maximize"),
    (4, 'min: 0.0001, max: 0.01', 'min: 0.01, max: 0.0001', "line 4: parameters.learning_rate.min: min (0.01) must be less than max"),
    (4, 'min: 0.0001', 'min: 0', "line 4: parameters.learning_rate.min: log_uniform_values needs min > 0"),
    (4, 'log_uniform_values', 'log_uniform_vals', "line 4: parameters.learning_rate.distribution: unknown distribution"),
    (4, 'min: 0.0001, max: 0.01', 'min: 0.0001', "line 4: parameters.learning_rate: log_uniform_values needs 'max'"),
    (4, 'max: 0.01}', 'max: 0.01, step: 2}', "line 4: parameters.learning_rate.step: unknown key 'step'"),
    (4, 'learning_rate:', 'learning_rat:', "line 4: parameters.learning_rat: 'learning_rat' is not a training config key (did you mean 'learning_rate'?)"),
    (5, '[16, 32]', '[0, 32]', "line 5: parameters.batch_size: batch_size=0 must be a positive integer"),
    (5, 'batch_size: {values: [16, 32]}', 'pool: {values: [avg, median]}', "line 5: parameters.pool: pool='median': choose one of avg, concat"),
    (5, '{values: [16, 32]}', '{values: []}', "line 5: parameters.batch_size.values: values must be a non-empty list"),
    (5, 'batch_size: {values: [16, 32]}', 'model_name: {values: [efficientnet_lite0, efficientnet_lite9]}',
        "line 5: parameters.model_name: unknown model 'efficientnet_lite9' (did you mean"),
    (1, 'method: bayes', 'method: grid', "line 4: parameters.learning_rate.distribution: grid search needs discrete values"),
    (3, 'parameters:', 'run_cap: 0\nparameters:', "line 3: run_cap: run_cap must be a positive integer"),
    (3, 'parameters:', 'early_terminate: {type: hyperband, min_iter: 0, eta: 1}\nparameters:', "line 3: early_terminate.min_iter"),
    (3, 'parameters:', 'early_terminate: {type: hyperband, max_iter: 9}\nparameters:', "line 3: early_terminate.max_iter: max_iter needs s"),
    (3, 'parameters:', 'early_terminate: {type: hyperband, eta: 3}\nparameters:', "line 3: early_terminate: hyperband needs min_iter"),
    (3, 'parameters:', 'early_terminate: {type: hyperband, max_iter: 2, s: 1}\nparameters:', "line 3: early_terminate.max_iter: no band"),
    (3, 'parameters:', 'early_terminate: {type: hyperband, min_iter: 1, strict: yes please}\nparameters:', "line 3: early_terminate.strict: strict must be true or false"),
    (3, 'parameters:', 'early_terminate: {type: asha}\nparameters:', "line 3: early_terminate.type: early_terminate type must be hyperband"),
    (3, 'parameters:', 'count: 3\nparameters:', "line 3: count: unknown key 'count'"),
])
def test_validation_errors(tmp_path, line, old, new, expect):
    "Each kind of mistake is reported with the line to fix"
    text = GOOD.replace(old, new, 1)
    assert text != GOOD
    with pytest.raises(ValueError) as e: validate_sweep(_yaml(tmp_path, text))
    assert expect in str(e.value), str(e.value)

def test_validation_reports_everything_at_once(tmp_path):
    bad = GOOD.replace('valid_loss', 'val_loss').replace('[16, 32]', '[0, 32]').replace('0.0001, max: 0.01', '0.01, max: 0.0001')
    with pytest.raises(ValueError) as e: validate_sweep(_yaml(tmp_path, bad))
    msg = str(e.value)
    assert 'has 3 problems' in msg and all(f'line {i}:' in msg for i in (2, 4, 5)), msg

def test_validation_more_cases(tmp_path):
    "Beta is W&B-only, nested parameters are refused, hyperband needs a per-epoch metric, overrides are checked"
    with pytest.raises(ValueError, match="beta is W&B-only"):
        validate_sweep({'method': 'random', 'parameters': {'learning_rate': {'distribution': 'beta', 'a': 2, 'b': 3}}})
    validate_sweep({'method': 'random', 'parameters': {'learning_rate': {'distribution': 'beta', 'a': 2, 'b': 3}}}, backend='wandb')
    with pytest.raises(ValueError, match="nested parameters"):
        validate_sweep({'method': 'random', 'parameters': {'epochs': {'parameters': {'a': {'value': 1}}}}})
    with pytest.raises(ValueError, match="per-epoch metric"):
        validate_sweep({'method': 'random', 'metric': {'name': 'fit_time_s'}, 'early_terminate': {'type': 'hyperband'},
                        'parameters': {'epochs': {'values': [1, 2]}}})
    with pytest.raises(ValueError, match="'lr' is not a training config key"):
        validate_sweep(SWEEP_EXAMPLE, overrides={'lr': '0.1'})
    with pytest.raises(FileNotFoundError, match='not found'): validate_sweep(tmp_path/'nope.yaml')
    spec = validate_sweep(SWEEP_EXAMPLE, overrides={'learning_rate': '1e-3', 'epochs': '1'})
    assert spec.fixed == {'data': 'sample', 'learning_rate': 0.001, 'epochs': 1} and 'learning_rate' not in spec.parameters

def test_example_sweep_is_valid_and_shipped():
    assert SWEEP_EXAMPLE.read_text() == (Path(__file__).parents[1]/'nbs'/'sweeps'/'model-selection-sweep.yaml').read_text()
    spec = validate_sweep(SWEEP_EXAMPLE)
    assert (spec.method, spec.metric, spec.goal) == ('bayes', 'valid_loss', 'minimize')
    assert set(spec.parameters) == {'batch_size', 'learning_rate', 'model_name'}

# --- samplers ---------------------------------------------------------------------------------------------------

BOUNDS = {'method': 'bayes', 'metric': {'name': 'valid_loss'}, 'parameters': {
    'learning_rate': {'distribution': 'log_uniform_values', 'min': 1e-4, 'max': 1e-1},
    'epochs': {'distribution': 'int_uniform', 'min': 1, 'max': 3},
    'batch_size': {'distribution': 'q_log_uniform_values', 'min': 8, 'max': 64, 'q': 8},
    'img_size': {'distribution': 'q_uniform', 'min': 32, 'max': 64, 'q': 16},
    'noise_std': {'distribution': 'normal', 'mu': 0.1, 'sigma': 0.02},
    'valid_pct': {'distribution': 'uniform', 'min': 0.1, 'max': 0.3}}}

def _in_bounds(c):
    return (1e-4 <= c['learning_rate'] <= 1e-1 and c['epochs'] in (1, 2, 3) and c['batch_size'] in range(8, 65, 8)
            and c['img_size'] in (32, 48, 64) and 0.04 <= c['noise_std'] <= 0.16 and 0.1 <= c['valid_pct'] <= 0.3)

def test_bayes_proposals_within_bounds():
    "TPE (after its random start-up) proposes only values inside every distribution's support"
    spec = validate_sweep(BOUNDS)
    study = optuna.create_study(sampler=make_sampler(spec, count=40))
    cfgs = []
    for _ in range(40):
        t = study.ask(); c = suggest_config(t, spec); cfgs.append(c)
        study.tell(t, abs(c['learning_rate'] - 3e-3) + c['noise_std'])
    assert all(_in_bounds(c) for c in cfgs), [c for c in cfgs if not _in_bounds(c)]
    assert all(isinstance(c['batch_size'], int) and isinstance(c['img_size'], int) for c in cfgs)
    best = study.best_trial.user_attrs or cfgs[study.best_trial.number]
    assert abs(best['learning_rate'] - 3e-3) < 3e-3   # the search did move toward the optimum

def test_bayes_sweep_runs_trials_within_bounds(tmp_path, fake):
    spec = {**BOUNDS, 'parameters': {**BOUNDS['parameters'], 'epochs': {'distribution': 'int_uniform', 'min': 1, 'max': 2}}}
    out = sweep(spec, count=6, out=tmp_path/'sw', trainer_cmd=fake, preflight_check=False)
    r = _results(out)
    assert list(r.state) == ['COMPLETE']*6
    cfgs = [yaml.safe_load((out/d/'trial.yaml').read_text()) for d in r.trial_dir]
    assert all(_in_bounds(c) for c in cfgs)
    assert list(r.learning_rate) == [c['learning_rate'] for c in cfgs]   # results.csv holds what the trainer got

def test_grid_covers_every_point_once(tmp_path, fake):
    y = _yaml(tmp_path, """\
        method: grid
        parameters:
          learning_rate: {values: [0.001, 0.01, 0.1]}
          batch_size: {values: [16, 32]}
          epochs: {value: 1}
        """)
    out = sweep(y, out=tmp_path/'sw', trainer_cmd=fake, preflight_check=False)
    r = _results(out)
    assert len(r) == 6 and set(r.state) == {'COMPLETE'}
    assert sorted(zip(r.learning_rate, r.batch_size)) == sorted((lr, bs) for lr in (0.001, 0.01, 0.1) for bs in (16, 32))
    assert sorted(r.trial_dir) == [f'trials/{i:04d}' for i in range(6)]
    assert all((out/d/'metrics.json').exists() and (out/d/'log.txt').exists() for d in r.trial_dir)
    out2 = sweep(y, out=tmp_path/'sw', trainer_cmd=fake, preflight_check=False)   # rerun: nothing left to do
    assert len(_results(out2)) == 6

def test_count_needed_for_random(tmp_path, fake):
    with pytest.raises(ValueError, match='needs a trial count'):
        sweep({'method': 'random', 'parameters': {'learning_rate': {'values': [0.01]}}}, out=tmp_path, trainer_cmd=fake)

def test_rerun_into_folder_of_another_sweep_is_refused(tmp_path, fake):
    s = {'method': 'grid', 'parameters': {'learning_rate': {'values': [0.01]}, 'epochs': {'value': 1}}}
    sweep(s, out=tmp_path/'sw', trainer_cmd=fake, preflight_check=False)
    with pytest.raises(ValueError, match='holds another sweep'):
        sweep(s, out=tmp_path/'sw', trainer_cmd=fake, preflight_check=False, overrides={'epochs': 2})

# --- pruning ----------------------------------------------------------------------------------------------------

def test_hyperband_stops_bad_trials_early(tmp_path, fake, monkeypatch):
    "Trials worse than the best at a rung are stopped there: fewer epochs than without pruning, same best"
    monkeypatch.setenv('FAKE_EPOCH_S', '0.5')
    y = _yaml(tmp_path, """\
        method: grid
        metric: {name: valid_loss, goal: minimize}
        early_terminate: {type: hyperband, min_iter: 1, eta: 3}
        parameters:
          learning_rate: {values: [0.00001, 0.3, 0.1, 0.0001, 0.00003, 0.003]}   # grid order (seed 0): 0.003 first
          epochs: {value: 3}
          freeze_epochs: {value: 0}
        """)
    out = sweep(y, out=tmp_path/'sw', trainer_cmd=fake, preflight_check=False)
    r = _results(out)
    pruned = r[r.state == 'PRUNED']
    assert len(pruned) >= 3, r
    assert (pruned.epochs_run < 3).all() and (pruned.status == 'pruned').all()
    assert r.epochs_run.sum() < 6*3
    assert r.loc[r.valid_loss.idxmin(), 'learning_rate'] == 0.003   # the best trial was never pruned
    for d in pruned.trial_dir: assert not (out/d/'metrics.json').exists()   # its process was stopped before the end

def _study_with(direction, finished, running):
    "An in-memory study holding finished and running trials with these per-epoch histories"
    st = optuna.create_study(direction=direction)
    for h in finished: st.add_trial(create_trial(state=TrialState.COMPLETE, value=h[-1], intermediate_values=dict(enumerate(h, 1))))
    for h in running: st.add_trial(create_trial(state=TrialState.RUNNING, intermediate_values=dict(enumerate(h, 1))))
    return st

def test_wandb_hyperband_matches_wandb_rule():
    "W&B's own example (sweeps' hyperband_stop_runs docstring): max_iter 5, s 2, eta 2 -> bands 1, 2; only run b stops"
    et = {'type': 'hyperband', 'max_iter': 5, 'eta': 2, 's': 2}
    assert hyperband_bands(et) == [1, 2] and hyperband_bands({'min_iter': 2, 'eta': 3})[:3] == [2, 6, 18]
    a, b, c, d, e = [10, 9], [10, 10], [10, 8, 8], [10, 7, 7], [10, 6, 6]
    for strict in (True, False):
        st = _study_with('minimize', [a, e], [b, c, d])
        pr = WandbHyperband(hyperband_bands(et), 2, strict)
        # band 2 values: 9, 10, 8, 7, 6 -> threshold sorted[int(5/2)] = 8; b (10) is worse, c (8) ties and goes on
        assert pr.threshold(st, 2) == 8
        assert [pr.prune(st, t) for t in st.get_trials(states=(TrialState.RUNNING,))] == [True, False, False]
    st = _study_with('maximize', [[-x for x in a], [-x for x in e]], [[-x for x in h] for h in (b, c, d)])
    assert [pr.prune(st, t) for t in st.get_trials(states=(TrialState.RUNNING,))] == [True, False, False]   # same, maximising

def test_wandb_hyperband_strict_and_lenient():
    "strict judges the value at the band; strict: false the best so far, so a spike at the band is forgiven"
    good, spiky = [1.0, 0.9, 0.8], [0.7, 2.5, 0.5]   # spiky: best at epoch 1, a spike at band 2
    for strict, expect in ((True, True), (False, False)):
        st = _study_with('minimize', [good, [1.1, 1.0, 0.9], [1.2, 1.1, 1.0]], [spiky[:2]])
        assert WandbHyperband([2, 6], 3, strict).prune(st, st.get_trials(states=(TrialState.RUNNING,))[0]) is expect
    # the threshold tightens as better trials reach the band: a trial that passed is judged again
    st = _study_with('minimize', [], [[2.0]])
    pr, t = WandbHyperband([1, 3], 3), st.get_trials()[0]
    assert not pr.prune(st, t)
    for h in ([1.0], [1.1], [1.2]): st.add_trial(create_trial(state=TrialState.COMPLETE, value=h[0], intermediate_values={1: h[0]}))
    assert pr.prune(st, st.get_trials()[0])

def test_replay_pruner_and_nan():
    "replay_pruner: epochs each trial would run; NaN values are left out (W&B filters them), never judged"
    hist = [[1.0, 0.8, 0.7], [2.0, 1.9, 1.8], [0.9, 0.7, 0.6], [float('nan'), 3.0, 2.0]]
    assert replay_pruner(hist, WandbHyperband([1, 3], 3)) == [3, 1, 3, 2]   # the last reaches band 1 at epoch 2: NaN is skipped
    assert replay_pruner([[1, 2], [2, 3]], WandbHyperband([1], 3), direction='maximize') == [2, 2]
    assert replay_pruner([[2, 3], [1, 2]], WandbHyperband([1], 3), direction='maximize') == [2, 1]
    assert make_pruner(validate_sweep({'method': 'random', 'parameters': {'learning_rate': {'value': 0.1}}})).__class__.__name__ == 'NopPruner'

def test_last_epoch_is_never_pruned(tmp_path, fake, monkeypatch):
    "A trial that trained all its epochs completes, even when it is worse than the band threshold at its last epoch"
    monkeypatch.setenv('FAKE_FINISH_S', '1.5')   # the trainer is still finishing when the last epoch is read
    y = _yaml(tmp_path, """\
        method: grid
        metric: {name: valid_loss, goal: minimize}
        early_terminate: {type: hyperband, min_iter: 1, eta: 3}
        parameters:
          learning_rate: {values: [0.00001, 0.003]}
          epochs: {value: 1}
        """)
    r = _results(sweep(y, out=tmp_path/'sw', trainer_cmd=fake, preflight_check=False))
    assert r.sort_values('number').learning_rate.tolist() == [0.003, 0.00001]   # grid order (seed 0): the worse one second
    assert (r.state == 'COMPLETE').all() and (r.epochs_run == 1).all() and r.valid_loss.notna().all(), r

# --- failures ---------------------------------------------------------------------------------------------------

def test_failing_trials_do_not_stop_the_sweep(tmp_path, fake):
    "An exception and a NaN fail their trial only, with the reason recorded; the rest of the grid runs"
    y = _yaml(tmp_path, """\
        method: grid
        parameters:
          learning_rate: {values: [0.001, 5.0]}
          batch_size: {values: [13, 32]}
          epochs: {value: 2}
        """)
    out = sweep(y, out=tmp_path/'sw', trainer_cmd=fake, preflight_check=False, max_failures=5)
    r = _results(out).set_index(['learning_rate', 'batch_size'])
    assert len(r) == 4
    assert r.loc[(0.001, 32), 'state'] == 'COMPLETE'
    assert r.loc[(5.0, 32), 'status'] == 'failed: nan loss'
    assert 'boom: batch_size 13' in r.loc[(0.001, 13), 'status'] and r.loc[(0.001, 13), 'state'] == 'FAIL'

def test_consecutive_failures_stop_the_sweep(tmp_path, fake):
    s = {'method': 'random', 'parameters': {'learning_rate': {'min': 2.0, 'max': 9.0}, 'epochs': {'value': 1}}}
    with pytest.raises(SweepStopped, match='2 trials failed in a row') as e:
        sweep(s, count=5, out=tmp_path/'sw', trainer_cmd=fake, preflight_check=False, max_failures=2)
    assert 'nan loss' in str(e.value)
    assert list(_results(tmp_path/'sw').state) == ['FAIL', 'FAIL']

# --- real sweep files, and what a sweep says ----------------------------------------------------------------------

FASTAI_TIMM = """\
program: fine_tune.py
method: bayes
metric:
  name: valid_loss
  goal: minimize
parameters:
    data:
        value: "PETS"
    pool:
        values: ['concat', 'avg']
    learning_rate:
        distribution: uniform
        min: 1e-5
        max: 1e-2
"""

def _images(root, classes=('a', 'b')):
    "A tiny image folder: two PNGs per class"
    from PIL import Image
    for c in classes:
        (root/c).mkdir(parents=True)
        for i in range(2): Image.new('RGB', (8, 8), (40*i, 90, 200)).save(root/c/f'{i}.png')
    return root

def _trial_lines(out:str)->list: return [l for l in out.splitlines() if l.startswith('trial ')]

def test_real_sweep_file_numbers_and_lines(tmp_path):
    "fastai_timm's sweep files write `min: 1e-5` (a float for W&B, a string for PyYAML); line numbers still point right"
    spec = validate_sweep(_yaml(tmp_path, FASTAI_TIMM))
    assert spec.parameters['learning_rate']['min'] == 1e-5 and spec.fixed['data'] == 'PETS'
    with pytest.raises(ValueError, match=r"line 13: parameters.learning_rate.min: min \(0.01\) must be less than max \(1e-05\)"):
        validate_sweep(_yaml(tmp_path, FASTAI_TIMM.replace('min: 1e-5', 'min: 1e-2').replace('max: 1e-2', 'max: 1e-5')))

def test_preflight_checks_every_data_value(tmp_path, fake):
    "A data value that is no dataset stops the sweep before any trial, with the value and the fix, even with no model check"
    y = _yaml(tmp_path, FASTAI_TIMM)
    with pytest.raises(ValueError, match=r"data 'PETS'.*set data: .*--set data=PATH"):
        sweep(y, count=2, out=tmp_path/'sw', trainer_cmd=fake, preflight_check=False)
    assert not (tmp_path/'sw').exists()
    good, empty = _images(tmp_path/'imgs'), tmp_path/'empty'
    empty.mkdir()
    s = {'method': 'grid', 'parameters': {'data': {'values': [str(good), 'sample', str(empty), str(tmp_path/'nope')]},
                                          'learning_rate': {'value': 0.01}, 'epochs': {'value': 1}}}
    with pytest.raises(ValueError) as e: sweep(s, out=tmp_path/'sw2', trainer_cmd=fake, preflight_check=False)
    msg = str(e.value)
    assert str(empty) in msg and 'has no class folders' in msg and str(tmp_path/'nope') in msg, msg
    assert f"data '{good}'" not in msg and "'sample'" not in msg, msg
    assert not (tmp_path/'sw2').exists()
    out = sweep(y, count=1, out=tmp_path/'sw3', trainer_cmd=fake, preflight_check=False, overrides={'data': str(good)})
    assert _results(out).state.tolist() == ['COMPLETE']

def test_sweep_says_what_it_does_before_the_first_trial(tmp_path, fake, capsys):
    "No data: say it trains on the sample; a grid says its size; count 0 is refused, not read as 'the whole grid'"
    y = _yaml(tmp_path, """\
        method: grid
        parameters:
          learning_rate: {values: [0.003, 0.0001]}
          epochs: {value: 1}
        """)
    with pytest.raises(ValueError, match='count=0'): sweep(y, count=0, out=tmp_path/'sw', trainer_cmd=fake, preflight_check=False)
    assert not (tmp_path/'sw').exists()
    capsys.readouterr()
    sweep(y, out=tmp_path/'sw', trainer_cmd=fake, preflight_check=False)
    lines = capsys.readouterr().out.splitlines()
    first = next(i for i, l in enumerate(lines) if l.startswith('trial '))
    before = '\n'.join(lines[:first])
    assert 'no data in the sweep: trials train on the bundled Fashion-MNIST sample; set data: in the YAML or --set data=PATH' in before
    assert 'grid: 2 trials' in before, lines

def test_one_line_per_trial_with_best_so_far(tmp_path, fake, capfd):
    "Each finished trial prints its number, params, metric, status and the best so far (here maximising), and the time"
    y = _yaml(tmp_path, """\
        method: grid
        metric: {name: valid_loss, goal: maximize}
        parameters:
          learning_rate: {values: [0.003, 0.0001, 0.3]}
          batch_size: {values: [32, 13]}
          epochs: {value: 1}
        """)
    out = sweep(y, out=tmp_path/'sw', trainer_cmd=fake, preflight_check=False, max_failures=6)
    lines = _trial_lines(capfd.readouterr().out)
    r = _results(out).set_index('number')
    assert len(lines) == 6, lines
    best = None
    for l in lines:
        n = int(l.split()[1])
        assert f"learning_rate={r.loc[n, 'learning_rate']:.3g}" in l and f"batch_size={r.loc[n, 'batch_size']}" in l, l
        assert 'elapsed' in l, l
        if r.loc[n, 'batch_size'] == 13: assert 'failed: exit code 1' in l and 'boom: batch_size 13' in l, l
        else:
            assert f"valid_loss={r.loc[n, 'valid_loss']:.4g}" in l and ' completed ' in l, l
            if best is None or r.loc[n, 'valid_loss'] > r.loc[best, 'valid_loss']: best = n
        if best is not None: assert f"best={r.loc[best, 'valid_loss']:.4g} (trial {best})" in l, l
    assert r.loc[best, 'learning_rate'] == 0.3

def test_program_command_project_entity(tmp_path, fake, capfd):
    "W&B's top-level keys are accepted and each gets one line saying what the kit does with it"
    text = """\
        program: train.py
        command: [python, train.py]
        project: kit-proj
        entity: kit-team
        method: grid
        parameters:
          learning_rate: {values: [0.003, 0.0001]}
          epochs: {value: 1}
          tracking: {value: wandb}
        """
    out = sweep(_yaml(tmp_path, text), out=tmp_path/'sw', trainer_cmd=fake, preflight_check=False)
    printed = capfd.readouterr()
    lines = printed.out.splitlines()
    first = next(i for i, l in enumerate(lines) if l.startswith('trial '))
    before = '\n'.join(lines[:first])
    assert 'program: train.py is not run' in before and 'finetune-kit train --config trial.yaml' in before, before
    assert 'command: python train.py is not run' in before, before
    assert 'project: kit-proj' in before and 'wandb_project' in before, before
    assert 'entity: kit-team' in before, before
    assert 'A new study created' not in printed.err + printed.out   # Optuna's chatter is hidden
    t0 = out/'trials'/'0000'
    assert yaml.safe_load((t0/'trial.yaml').read_text())['wandb_project'] == 'kit-proj'
    assert (t0/'entity').read_text() == 'kit-team'
    assert lines[-1].endswith(f"wandb sync {out}/trials/*/wandb/offline-run-*") and '2 offline W&B runs' in lines[-1], lines[-1]
    out2 = sweep(_yaml(tmp_path, text.replace('tracking: {value: wandb}', 'batch_size: {value: 8}'), 'n.yaml'),
                 out=tmp_path/'sw2', trainer_cmd=fake, preflight_check=False)
    printed = capfd.readouterr().out
    assert 'project: kit-proj is unused' in printed and 'entity: kit-team is unused' in printed and 'wandb sync' not in printed
    assert (out2/'trials'/'0000'/'entity').read_text() == ''

def test_wandb_backend_gets_project_and_entity(tmp_path, fake, monkeypatch):
    import wandb, finetune_kit.sweep as fs
    got = {}
    monkeypatch.setitem(fs.BACKENDS, 'wandb', dataclasses.replace(fs.BACKENDS['wandb'], check=None))   # no login needed
    monkeypatch.setattr(wandb, 'sweep', lambda cfg, **kw: got.update(cfg=cfg, **kw) or 'abc123')
    monkeypatch.setattr(wandb, 'agent', lambda *a, **kw: None)
    s = {'program': 'train.py', 'project': 'kit-proj', 'entity': 'kit-team', 'method': 'grid',
         'parameters': {'learning_rate': {'values': [0.01]}}}
    sweep(s, backend='wandb', out=tmp_path/'sw', trainer_cmd=fake, preflight_check=False)
    assert got['project'] == 'kit-proj' and got['entity'] == 'kit-team' and 'program' not in got['cfg']

def test_cli_refuses_abbreviated_flags(tmp_path):
    "`--work 2` is not read as `--workers 2`: an error naming the flag it resembles"
    with pytest.raises(ValueError, match='--workers'):
        cmd_sweep([str(tmp_path/'s.yaml'), '--work', '2', '--count', '1', '--out', str(tmp_path/'sw')])

def test_cli_flags_come_from_sweeps_signature(tmp_path, monkeypatch, capsys):
    "Every flag reaches `sweep` as a keyword: old spellings, repeated --set, --no-preflight; unset flags get sweep's defaults"
    import finetune_kit.sweep as fs
    got = {}
    def run(spec, count, out, **opts): got.update(spec=spec, count=count, out=out, **opts)
    monkeypatch.setitem(fs.BACKENDS, 'local', fs.Backend(run))
    y = _yaml(tmp_path, GOOD)
    cmd_sweep([str(y), '--count', '2', '--workers', '2', '--max-failures', '5', '--set', 'epochs=1', '--set', 'data=sample',
               '--no-preflight', '--seed', '7', '--heartbeat_s', '3', '--out', str(tmp_path/'sw')])
    assert f"sweep done: {tmp_path/'sw'/'results.csv'}" in capsys.readouterr().out
    assert (got['count'], got['workers'], got['max_failures'], got['seed'], got['heartbeat_s']) == (2, 2, 5, 7, 3)
    assert got['spec'].fixed == {'epochs': 1, 'data': 'sample'} and got['out'] == tmp_path/'sw'
    assert (got['storage'], got['trainer_cmd'], got['verbose']) == (None, None, True)
    assert main(['sweep', str(y), '--count', '1', '--max_failures', '4', '--out', str(tmp_path/'sw2'), '--no_preflight']) == 0
    assert got['max_failures'] == 4 and got['seed'] == 0
    with pytest.raises(ValueError, match="--set takes key=value, got 'epochs'"): cmd_sweep([str(y), '--set', 'epochs'])

def test_backend_refuses_options_it_cannot_honour(tmp_path, fake):
    "backend='wandb' ignores storage, max_failures, heartbeat_s and seed: a non-default value is an error, before any work"
    for k, v in (('storage', 'postgresql://db/sweeps'), ('max_failures', 5), ('heartbeat_s', 3), ('seed', 1)):
        with pytest.raises(ValueError, match=f"backend 'wandb' does not support {k}=.*; use backend='local'"):
            sweep(SWEEP_EXAMPLE, count=1, backend='wandb', out=tmp_path/'sw', trainer_cmd=fake, **{k: v})
    assert not (tmp_path/'sw').exists()

def _module_tree(name):
    import ast, importlib.util
    return ast.parse(Path(importlib.util.find_spec(name).origin).read_text())

def _imports(tree):
    "Every module a module imports, anywhere in it (relative ones as `.name`)"
    import ast
    mods = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import): mods |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom): mods.add('.'*n.level + (n.module or ''))
    return mods

def _defines(tree):
    import ast
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}

def test_sweep_modules_layering():
    "spec <- pruner <- runner <- cli: the runner defines no validation or pruner; spec and pruner never import the runner"
    runner = _module_tree('finetune_kit.sweep')
    assert 'LocalSweep' in _defines(runner) and not {'validate_sweep', 'WandbHyperband'} & _defines(runner)
    assert {'validate_sweep', 'SweepSpec'} <= _defines(_module_tree('finetune_kit.sweep_spec'))
    assert 'WandbHyperband' in _defines(_module_tree('finetune_kit.sweep_pruner'))
    for low in ('finetune_kit.sweep_spec', 'finetune_kit.sweep_pruner'):
        imports = _imports(_module_tree(low))
        assert not {'finetune_kit.sweep', '.sweep', 'finetune_kit.cli', '.cli'} & imports, (low, imports)
    r = subprocess.run([sys.executable, '-c', "import sys, finetune_kit.cli; print(sorted(m for m in ('optuna', 'torch', 'finetune_kit.sweep') if m in sys.modules))"],
                       capture_output=True, text=True)
    assert r.stdout.strip() == '[]', r.stdout + r.stderr   # cli imports the sweep (and optuna, torch) only when it runs one

def test_registries_are_the_one_place():
    "A distribution or a method is one record: validation, drawing, grids and trial counts all read it"
    from finetune_kit.sweep_spec import DISTRIBUTIONS, METHODS, Distribution, grid_space
    from finetune_kit.sweep import sweep_notes
    spec = validate_sweep({'method': 'grid', 'parameters': {'batch_size': {'values': [16, 32]}, 'epochs': {'min': 1, 'max': 2}}})
    assert grid_space(spec) == {'batch_size': [16, 32], 'epochs': [1, 2]} and METHODS['grid'].size(spec) == 4
    assert sweep_notes(spec, 4)[0] == 'grid: 4 trials (every point)'
    assert all(d.suggest for n, d in DISTRIBUTIONS.items() if n not in ('beta', 'q_beta'))
    assert isinstance(DISTRIBUTIONS['uniform'], Distribution)

# --- persistence and parallelism --------------------------------------------------------------------------------

def _sweep_process(**kw):
    "A sweep in its own process (as `finetune-kit sweep` would be)"
    code = "import json, sys; from finetune_kit.sweep import sweep; sweep(**json.loads(sys.argv[1]))"
    # a background job (CI) inherits SIGINT ignored; restore the default so Python turns it into KeyboardInterrupt
    return subprocess.Popen([sys.executable, '-c', code, json.dumps(kw, default=str)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

def _wait_for(cond, timeout=60):
    t = time.time()
    while not cond():
        assert time.time() - t < timeout, 'timed out'
        time.sleep(0.1)

def _alive(pid):
    try: os.kill(pid, 0)
    except ProcessLookupError: return False
    try: return open(f'/proc/{pid}/stat').read().split()[2] != 'Z'
    except FileNotFoundError: return False

def test_kill_and_resume(tmp_path, fake, monkeypatch):
    "SIGKILL mid-trial, rerun the same command: the lost trial is retried once, no completed one is repeated"
    monkeypatch.setenv('FAKE_EPOCH_S', '0.4')
    s = {'method': 'random', 'name': 'kr', 'parameters': {'learning_rate': {'distribution': 'log_uniform_values', 'min': 1e-4, 'max': 1e-2},
                                              'epochs': {'value': 4}}}
    kw = dict(yaml_path=s, count=3, out=str(tmp_path/'sw'), trainer_cmd=fake, preflight_check=False, heartbeat_s=1)
    p = _sweep_process(**kw)
    t1 = tmp_path/'sw'/'trials'/'0001'
    _wait_for(lambda: (t1/'history.csv').exists() and len((t1/'history.csv').read_text().splitlines()) >= 2)
    p.send_signal(signal.SIGKILL); p.wait()
    child = int((t1/'pid').read_text())
    _wait_for(lambda: not _alive(child), 10)   # the trial process died with its sweep
    assert sweep(**kw) == tmp_path/'sw'
    r = _results(tmp_path/'sw')
    assert (r.state == 'COMPLETE').sum() == 3 and len(r) == 4
    lost = r[r.state == 'FAIL']
    assert list(lost.number) == [1] and 'lost' in lost.status.iloc[0]
    retry = r[r.retry_of == 1]
    assert len(retry) == 1 and retry.state.iloc[0] == 'COMPLETE'
    assert retry.learning_rate.iloc[0] == pytest.approx(yaml.safe_load((t1/'trial.yaml').read_text())['learning_rate'])
    done = r[r.state == 'COMPLETE']
    assert done.learning_rate.nunique() == 3 and done.trial_dir.nunique() == 3
    assert sweep(**kw) == tmp_path/'sw' and len(_results(tmp_path/'sw')) == 4   # a finished sweep stays finished

def test_two_workers_on_one_sqlite_study(tmp_path, fake, monkeypatch):
    "Two sweep processes of two workers each share one study: exactly `count` trials, none lost or duplicated"
    monkeypatch.setenv('FAKE_EPOCH_S', '0.3')
    s = {'method': 'random', 'name': 'par', 'parameters': {'learning_rate': {'distribution': 'log_uniform_values', 'min': 1e-4, 'max': 1e-2},
                                               'epochs': {'value': 2}}}
    kw = dict(yaml_path=s, count=8, out=str(tmp_path/'sw'), trainer_cmd=fake, preflight_check=False, workers=2)
    procs = [_sweep_process(**kw, seed=i) for i in range(2)]
    for p in procs: assert p.wait(120) == 0, p.stdout.read()
    study = _study(tmp_path/'sw', 'par')
    ts = study.get_trials()
    assert [t.state.name for t in ts] == ['COMPLETE']*8
    assert sorted(t.number for t in ts) == list(range(8))
    assert len({t.params['learning_rate'] for t in ts}) == 8
    assert sorted(t.user_attrs['trial_dir'] for t in ts) == [f'trials/{i:04d}' for i in range(8)]
    r = _results(tmp_path/'sw')
    assert len(r) == 8 and all((tmp_path/'sw'/d/'metrics.json').exists() for d in r.trial_dir)
    spans = sorted((t.datetime_start, t.datetime_complete) for t in ts)
    overlap = max(sum(a <= s0 < b for a, b in spans) for s0, _ in spans)
    assert overlap >= 2   # trials did run side by side
    ncpu = len(os.sched_getaffinity(0))
    assert 1 <= int((tmp_path/'sw'/'trials'/'0000'/'threads').read_text()) <= max(1, ncpu//2)   # threads split between workers

# --- one GPU per trial ------------------------------------------------------------------------------------------

GPU_SWEEP = {'method': 'random', 'name': 'gpus', 'parameters': {
    'learning_rate': {'distribution': 'log_uniform_values', 'min': 1e-4, 'max': 1e-2}, 'epochs': {'value': 2}}}

def _gpu_runs(out):
    "Each trial's GPU (as its process saw CUDA_VISIBLE_DEVICES) and when it ran"
    r = _results(out)
    return [dict(number=n, gpu=(out/d/'gpu').read_text(), start=float((out/d/'start').read_text()),
                 end=float((out/d/'end').read_text()) if (out/d/'end').exists() else None) for n, d in zip(r.number, r.trial_dir)]

def test_one_gpu_per_running_trial(tmp_path, fake, monkeypatch):
    "Default: every visible GPU (CUDA_VISIBLE_DEVICES respected), one worker each; no two running trials share a GPU"
    monkeypatch.setenv('FAKE_EPOCH_S', '0.3')
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '4,6')   # the GPUs this sweep may use
    out = sweep(GPU_SWEEP, count=6, out=tmp_path/'sw', trainer_cmd=fake, preflight_check=False)
    runs, r = _gpu_runs(out), _results(out)
    assert len(runs) == 6 and {x['gpu'] for x in runs} == {'4', '6'}, runs   # one id each, never the whole list
    assert [str(g) for g in r.gpu] == [x['gpu'] for x in runs] and (r.state == 'COMPLETE').all()
    pairs = [(a, b) for i, a in enumerate(runs) for b in runs[i+1:] if a['start'] < b['end'] and b['start'] < a['end']]
    assert pairs and all(a['gpu'] != b['gpu'] for a, b in pairs), runs   # two ran at once (2 workers), never on one GPU

def test_a_failing_gpu_fails_its_trials_only(tmp_path, fake, monkeypatch, capfd):
    "--gpus 0,1 where GPU 1 fails (a CUDA error, exit 1): its trials fail with the reason, GPU 0's complete"
    import finetune_kit.sweep as fs
    monkeypatch.setattr(fs, 'TRAIN_CMD', tuple(fake))   # what `finetune-kit sweep` runs per trial
    monkeypatch.setenv('FAKE_EPOCH_S', '0.2')
    monkeypatch.setenv('FAKE_BAD_GPU', '1')
    assert main(['sweep', str(_yaml(tmp_path, yaml.safe_dump(GPU_SWEEP))), '--gpus', '0,1', '--count', '3',
                 '--max_failures', '5', '--out', str(tmp_path/'sw'), '--no_preflight']) == 0
    r = _results(tmp_path/'sw')
    ok, bad = r[r.state == 'COMPLETE'], r[r.state == 'FAIL']
    assert len(ok) == 3 and set(ok.gpu.astype(str)) == {'0'} and len(bad) >= 1 and set(bad.gpu.astype(str)) == {'1'}, r
    assert all('CUDA error' in s for s in bad.status), list(bad.status)
    assert 'GPUs 0,1: 2 trials at a time' in capfd.readouterr().out

def test_gpus_refused_in_one_line(tmp_path, capsys):
    "A GPU listed twice, or more workers than GPUs, is refused before any work, in one line"
    y = _yaml(tmp_path, yaml.safe_dump(GPU_SWEEP))
    for args, msg in ((['--gpus', '0,0'], "gpus='0,0': GPU 0 is listed twice"),
                      (['--gpus', '0', '--workers', '2'], "2 workers but 1 GPU (0)"),
                      (['--gpus', 'all'], "gpus='all', but no GPU is visible")):
        assert main(['sweep', str(y), '--count', '2', '--out', str(tmp_path/'sw'), *args]) == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and msg in err, err
    assert not (tmp_path/'sw').exists()

def test_cpu_machine_is_unchanged(tmp_path, fake, monkeypatch):
    "No GPU visible: trials inherit the environment (no CUDA_VISIBLE_DEVICES), one worker; --gpus none hides GPUs ('')"
    import finetune_kit.sweep as fs
    monkeypatch.setattr(fs, 'visible_gpus', lambda: [])
    out = sweep(GPU_SWEEP, count=2, out=tmp_path/'sw', trainer_cmd=fake, preflight_check=False)
    assert [x['gpu'] for x in _gpu_runs(out)] == ['unset', 'unset'] and 'gpu' not in _results(out)
    out = sweep(GPU_SWEEP, count=2, out=tmp_path/'sw2', trainer_cmd=fake, preflight_check=False, gpus='none')
    assert [x['gpu'] for x in _gpu_runs(out)] == ['', '']
    assert fs.resolve_gpus(None, None) == (None, 1) and fs.resolve_gpus(None, 3) == (None, 3)

def test_cli_gpus_and_workers_reach_the_backend(tmp_path, monkeypatch):
    "--gpus 0,1 gives 2 workers by default; --workers is an int; the local backend gets the GPU ids"
    import finetune_kit.sweep as fs
    got = {}
    monkeypatch.setitem(fs.BACKENDS, 'local', fs.Backend(lambda spec, count, out, **o: got.update(o)))
    y = _yaml(tmp_path, GOOD)
    cmd_sweep([str(y), '--count', '2', '--gpus', '0,1', '--out', str(tmp_path/'sw'), '--no-preflight'])
    assert (got['gpus'], got['workers']) == (['0', '1'], 2)
    cmd_sweep([str(y), '--count', '2', '--gpus', '0,1', '--workers', '1', '--out', str(tmp_path/'sw'), '--no-preflight'])
    assert (got['gpus'], got['workers']) == (['0', '1'], 1)

# --- pre-flight and the W&B backend -----------------------------------------------------------------------------

def test_preflight_catches_broken_model(tmp_path, fake):
    "A model that cannot run at the sweep's image size stops the sweep before any trial"
    s = {'method': 'random', 'parameters': {'model_name': {'values': ['test_efficientnet', 'test_maxvit']},
         'img_size': {'value': 32}, 'pretrained': {'value': False}, 'learning_rate': {'value': 0.01}}}
    with pytest.raises(ValueError) as e: sweep(s, count=2, out=tmp_path/'sw', trainer_cmd=fake)
    msg = str(e.value)
    assert 'test_maxvit at img_size 32' in msg and 'test_efficientnet' not in msg, msg
    assert not (tmp_path/'sw'/'trials').exists()

def test_wandb_backend_needs_a_login(tmp_path, fake, monkeypatch):
    monkeypatch.delenv('WANDB_API_KEY', raising=False)
    with pytest.raises(ValueError, match='WANDB_MODE=offline'):
        sweep(SWEEP_EXAMPLE, count=1, backend='wandb', out=tmp_path/'a', trainer_cmd=fake)
    monkeypatch.delenv('WANDB_MODE')
    monkeypatch.setenv('HOME', str(tmp_path))
    monkeypatch.setenv('WANDB_CONFIG_DIR', str(tmp_path/'.config'))
    monkeypatch.setenv('NETRC', str(tmp_path/'.netrc'))
    with pytest.raises(ValueError, match='needs a W&B login: run `wandb login`'):
        sweep(SWEEP_EXAMPLE, count=1, backend='wandb', out=tmp_path/'b', trainer_cmd=fake)
    with pytest.raises(ValueError, match='backend must be one of'):
        sweep(SWEEP_EXAMPLE, count=1, backend='ray', out=tmp_path/'c', trainer_cmd=fake)

# --- the same behaviours with the real `finetune-kit train` -------------------------------------------------------

@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    "Two classes of 24 small images each (light and dark squares with noise): a real trial takes seconds"
    import numpy as np
    from PIL import Image
    root = tmp_path_factory.mktemp('tiny')
    rng = np.random.default_rng(0)
    for cls, base in (('light', 190), ('dark', 60)):
        (root/cls).mkdir()
        for i in range(24):
            a = np.clip(base + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype('uint8')
            Image.fromarray(a).save(root/cls/f'{i}.png')
    return root

def _real(tiny_data, **params):
    "A sweep dict over tiny timm test models on `tiny_data`, 1 epoch at 32 px"
    fixed = dict(data=str(tiny_data), img_size=32, epochs=1, freeze_epochs=0, batch_size=8, pretrained=False,
                 mixed_precision=False, num_workers=0, model_name='test_efficientnet', learning_rate=3e-2)
    fixed = {k: v for k, v in fixed.items() if k not in params}
    return {'parameters': {**{k: {'value': v} for k, v in fixed.items()}, **params}}

@pytest.mark.slow
def test_real_grid_two_workers_failure_and_run_folders(tmp_path, tiny_data):
    "Real trials: a grid on two workers, a model that crashes fails alone with its reason, run folders as `train`'s"
    s = {**_real(tiny_data, model_name={'values': ['test_efficientnet', 'test_maxvit']},
                 learning_rate={'values': [3e-3, 3e-2]}), 'method': 'grid', 'name': 'real-grid'}
    out = sweep(s, out=tmp_path/'sw', workers=2, preflight_check=False, max_failures=5)
    r = _results(out)
    assert len(r) == 4 and r.number.nunique() == 4
    assert sorted(zip(r.model_name, r.learning_rate)) == sorted((m, lr) for m in ('test_efficientnet', 'test_maxvit') for lr in (3e-3, 3e-2))
    ok, bad = r[r.model_name == 'test_efficientnet'], r[r.model_name == 'test_maxvit']
    assert set(ok.state) == {'COMPLETE'} and ok.valid_loss.notna().all() and ok.fit_time_s.notna().all()
    assert set(bad.state) == {'FAIL'} and all(s.startswith('failed') and len(s) > 10 for s in bad.status), list(bad.status)
    for d in ok.trial_dir:
        run = out/d
        assert {'config.yaml', 'history.csv', 'metrics.json', 'trial.yaml', 'log.txt', 'model'} <= {p.name for p in run.iterdir()}
        cfg = yaml.safe_load((run/'config.yaml').read_text())
        assert cfg['wandb_group'] == 'real-grid' and cfg['img_size'] == 32
        assert json.loads((run/'metrics.json').read_text())['status'] == 'completed'

@pytest.mark.slow
def test_real_hyperband_prunes(tmp_path, tiny_data):
    "Real trials: the good learning rate runs first (grid order), the hopeless ones are stopped after epoch 1 of 2"
    s = {**_real(tiny_data, learning_rate={'values': [3.0, 1e-7, 3e-2]}, epochs={'value': 2}), 'method': 'grid',
         'metric': {'name': 'valid_loss', 'goal': 'minimize'},
         'early_terminate': {'type': 'hyperband', 'min_iter': 1, 'eta': 4}}   # with 3 trials, eta 4 keeps only the best
    out = sweep(s, out=tmp_path/'sw', preflight_check=False)
    r = _results(out).set_index('learning_rate')
    assert r.loc[3e-2, 'state'] == 'COMPLETE' and r.loc[3e-2, 'epochs_run'] == 2 and r.loc[3e-2, 'number'] == 0
    pruned = r[r.state == 'PRUNED']
    assert len(pruned) == 2 and (pruned.epochs_run == 1).all(), r
    for d in pruned.trial_dir: assert not (out/d/'metrics.json').exists()   # stopped before the end (tiny epochs are too
                                                                              # quick to stop before epoch 2 is written)

@pytest.mark.slow
def test_real_kill_and_resume(tmp_path, tiny_data):
    "Real trials: SIGKILL mid-trial and rerun: exactly `count` completed trials, the lost one retried once"
    # 20 tiny epochs (a few seconds): a forked trial has no imports to spend, so the kill must land mid-training
    s = {**_real(tiny_data, learning_rate={'distribution': 'log_uniform_values', 'min': 1e-3, 'max': 1e-2},
                 epochs={'value': 20}), 'method': 'random', 'name': 'real-kr'}
    kw = dict(yaml_path=s, count=2, out=str(tmp_path/'sw'), preflight_check=False, heartbeat_s=1)
    p = _sweep_process(**kw)
    t1 = tmp_path/'sw'/'trials'/'0001'
    _wait_for(lambda: (t1/'history.csv').exists() and (tmp_path/'sw'/'results.csv').exists(), 300)   # trial 1 is training
    p.send_signal(signal.SIGKILL); p.wait()
    assert not (t1/'metrics.json').exists()   # killed before its end
    sweep(**kw)
    r = _results(tmp_path/'sw')
    assert (r.state == 'COMPLETE').sum() == 2 and list(r[r.state == 'FAIL'].number) == [1]
    assert r[r.retry_of == 1].state.tolist() == ['COMPLETE']

def test_ctrl_c_requeues_the_running_trial(tmp_path, fake, monkeypatch):
    "Ctrl-C stops the running trial, which is queued again; the same command then finishes the sweep"
    monkeypatch.setenv('FAKE_EPOCH_S', '2')  # slow epochs: under load the signal must still land mid-trial
    s = {'method': 'random', 'name': 'cc', 'parameters': {'learning_rate': {'distribution': 'log_uniform_values', 'min': 1e-4, 'max': 1e-2},
                                              'epochs': {'value': 3}}}
    kw = dict(yaml_path=s, count=2, out=str(tmp_path/'sw'), trainer_cmd=fake, preflight_check=False)
    p = _sweep_process(**kw)
    t1 = tmp_path/'sw'/'trials'/'0001'
    _wait_for(lambda: (t1/'history.csv').exists())
    p.send_signal(signal.SIGINT)
    assert p.wait(60) != 0 and 'interrupted' in p.stdout.read()
    r = _results(tmp_path/'sw')
    assert r.set_index('number').loc[1, 'status'] == 'failed: sweep stopped' and r.state.tolist()[-1] == 'WAITING'
    sweep(**kw)
    r = _results(tmp_path/'sw')
    assert (r.state == 'COMPLETE').sum() == 2 and r[r.retry_of == 1].state.tolist() == ['COMPLETE']

@pytest.mark.slow
def test_real_cli_sweep(tmp_path, tiny_data):
    "`finetune-kit sweep` runs the YAML with `--set` overrides; a bad YAML exits non-zero listing its problems"
    y = _yaml(tmp_path, yaml.safe_dump({**_real(tiny_data, learning_rate={'values': [3e-2]}), 'method': 'grid'}))
    cli = [sys.executable, '-m', 'finetune_kit.cli', 'sweep']
    r = subprocess.run(cli + [str(y), '--out', str(tmp_path/'sw'), '--set', 'img_size=24', '--no-preflight'],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    res = _results(tmp_path/'sw')
    assert res.state.tolist() == ['COMPLETE']
    assert yaml.safe_load((tmp_path/'sw'/res.trial_dir[0]/'config.yaml').read_text())['img_size'] == 24
    bad = _yaml(tmp_path, GOOD.replace('valid_loss', 'val_loss').replace('[16, 32]', '[0, 32]'), 'bad.yaml')
    r = subprocess.run(cli + [str(bad), '--count', '2', '--out', str(tmp_path/'bad')], capture_output=True, text=True)
    assert r.returncode != 0 and 'has 2 problems' in r.stderr and 'line 2: metric.name' in r.stderr and 'Traceback' not in r.stderr

def test_orphan_of_a_controller_killed_after_ask_is_retried(tmp_path, fake):
    "A trial left running with no heartbeat (its controller died right after `study.ask()`) is retried, not waited for forever"
    s = {'method': 'random', 'name': 'orphan', 'parameters': {'learning_rate': {'distribution': 'log_uniform_values', 'min': 1e-4, 'max': 1e-2},
                                                 'epochs': {'value': 1}}}
    kw = dict(yaml_path=s, count=2, out=str(tmp_path/'sw'), trainer_cmd=fake, preflight_check=False, heartbeat_s=1)
    sweep(**{**kw, 'count': 1})
    _study(tmp_path/'sw', 'orphan').ask()  # the controller that asked for this trial died before its first heartbeat
    p = _sweep_process(**kw)
    try: rc = p.wait(90)
    except subprocess.TimeoutExpired: p.kill(); pytest.fail('the sweep waited for the orphaned trial instead of retrying it')
    assert rc == 0, p.stdout.read()[-2000:]
    r = _results(tmp_path/'sw')
    assert (r.state == 'COMPLETE').sum() == 2 and r[r.retry_of == 1].state.tolist() == ['COMPLETE'], r

# --- trials forked from the pre-imported trainer ------------------------------------------------------------------

def _cfg(tiny_data, **kw):
    return {**{k: v['value'] for k, v in _real(tiny_data)['parameters'].items()}, **kw}

@pytest.mark.slow
def test_a_forked_trial_trains_as_a_new_process_does(tmp_path, tiny_data, monkeypatch):
    "The trainer's trial is forked from the pre-imported trainer and gives what a new process gives, to the bit"
    import finetune_kit.sweep as sw
    cfg = _cfg(tiny_data, epochs=2)
    forked, spawned = sw.launch_trial(cfg, tmp_path/'forked'), sw.spawn_trial(cfg, tmp_path/'spawned')
    assert isinstance(forked, sw.ForkedTrial) and isinstance(spawned, subprocess.Popen)
    assert forked.wait(300) == 0 and spawned.wait(300) == 0, (tmp_path/'forked'/'log.txt').read_text()[-2000:]
    m = [json.loads((tmp_path/d/'metrics.json').read_text()) for d in ('forked', 'spawned')]
    assert m[0]['status'] == 'completed' and m[0]['valid_loss'] == m[1]['valid_loss'] and m[0]['error_rate'] == m[1]['error_rate']
    h = [pd.read_csv(tmp_path/d/'history.csv') for d in ('forked', 'spawned')]
    assert h[0].train_loss.tolist() == h[1].train_loss.tolist() and len(h[0]) == 2
    assert 'epoch' in (tmp_path/'forked'/'log.txt').read_text()          # its output went to its own log
    # the environment changed since the zygote started: it starts again with the new one (no trial of it runs)
    monkeypatch.setenv('FINETUNE_KIT_TEST_MARK', '1')
    p = sw.launch_trial({**cfg, 'data': str(tmp_path/'none')}, tmp_path/'again')
    assert isinstance(p, sw.ForkedTrial) and p.wait(60) == 2 and sw._zygote['z'].env['FINETUNE_KIT_TEST_MARK'] == '1'
    assert 'is neither a dataset name' in (tmp_path/'again'/'log.txt').read_text()
    zygote = sw._zygote['z'].proc
    sw.release_forks()
    assert sw._zygote['z'] is None and zygote.wait(10) == 0   # ended, its memory back

def test_which_trials_fork(monkeypatch):
    "Another trainer, a GPU, or a changed environment while a forked trial runs: the trial is spawned instead"
    import finetune_kit.sweep as sw
    monkeypatch.setattr(sw, 'visible_gpus', lambda: [])
    assert sw.can_fork() and sw.can_fork(sw.TRAIN_CMD, {'CUDA_VISIBLE_DEVICES': ''})
    assert not sw.can_fork([sys.executable, 'fake_trainer.py']) and not sw.can_fork(env={'CUDA_VISIBLE_DEVICES': '1'})
    monkeypatch.setattr(sw, 'visible_gpus', lambda: ['0'])
    assert not sw.can_fork()
    monkeypatch.setattr(sw, 'visible_gpus', lambda: [])
    class Old:   # a zygote started with another environment
        env, threads, busy = {'OTHER': 'environment'}, 1, True
        def running(self): return self.busy
    monkeypatch.setitem(sw._zygote, 'z', Old())
    assert not sw.can_fork()            # its trial still runs: spawn
    Old.busy = False
    assert sw.can_fork()                # none runs: it will be started again

@pytest.mark.slow
def test_a_killed_sweep_takes_its_forked_trials_with_it(tmp_path, tiny_data):
    "SIGKILL the sweep's process mid-trial: the forked trial and the zygote die with it (no orphans)"
    code = ("import json, sys, time, pathlib; from finetune_kit.sweep import launch_trial, _zygote\n"
            "p = launch_trial(json.loads(sys.argv[1]), pathlib.Path(sys.argv[2]))\n"
            "print(type(p).__name__, p.pid, _zygote['z'].proc.pid, flush=True); time.sleep(600)")
    ctrl = subprocess.Popen([sys.executable, '-c', code, json.dumps(_cfg(tiny_data, epochs=200)), str(tmp_path/'t')],
                            stdout=subprocess.PIPE, text=True)
    kind, trial, server = ctrl.stdout.readline().split()
    _wait_for(lambda: (tmp_path/'t'/'history.csv').exists(), 120)   # training
    ctrl.kill(); ctrl.wait()
    assert kind == 'ForkedTrial'
    _wait_for(lambda: not _alive(int(trial)) and not _alive(int(server)), 20)

@pytest.mark.slow
def test_a_dead_zygote_is_replaced_and_a_failed_fork_spawns(tmp_path, monkeypatch):
    "A zygote outlives its sweep briefly for the next one; killed (out of memory, say), the next trial starts a new one; one that cannot fork: the trial is spawned"
    import finetune_kit.sweep as sw
    bad = {'data': str(tmp_path/'none')}
    p = sw.launch_trial(bad, tmp_path/'a')
    assert isinstance(p, sw.ForkedTrial) and p.wait(60) == 2
    old = sw._zygote['z']
    sw.release_forks(after=0.5)                          # as a sweep ends: the zygote waits for the next sweep
    assert sw.launch_trial(bad, tmp_path/'a2').wait(60) == 2 and sw._zygote['z'] is old
    time.sleep(1.5); assert sw._zygote['z'] is old       # it forked again meanwhile: still there
    old.proc.kill(); old.proc.wait()
    p = sw.launch_trial(bad, tmp_path/'b')
    assert isinstance(p, sw.ForkedTrial) and p.wait(60) == 2 and sw._zygote['z'] is not old
    def refuse(self, args): raise RuntimeError('the trial zygote did not fork a trial (exit code 1)')
    monkeypatch.setattr(sw.Zygote, 'fork', refuse)
    p = sw.launch_trial(bad, tmp_path/'c')
    assert isinstance(p, subprocess.Popen) and p.wait(60) == 2
    assert 'is neither a dataset name' in (tmp_path/'c'/'log.txt').read_text()
    monkeypatch.undo()
    sw.release_forks(after=0.3); time.sleep(1.5)
    assert sw._zygote['z'] is None                       # idle past the delay: ended
