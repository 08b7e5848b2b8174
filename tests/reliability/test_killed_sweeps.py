"""Killed and raced sweeps: two controllers on one SQLite study, SIGKILL of a controller or of a trial process at seeded
random moments, then the same command until the sweep is done: exactly `count` completed trials, none twice, none lost,
and `results.csv` parseable whenever it is read (stand-in trainer, so a round takes a second or two)."""
import os, random, signal, sys, time
from pathlib import Path
import optuna, pandas as pd, pytest
from .conftest import record_row, alive

HERE = Path(__file__).parent
FAKE = [sys.executable, str(HERE/'_fake_trainer.py')]
SPEC = {'method': 'random', 'name': 'race', 'metric': {'name': 'valid_loss', 'goal': 'minimize'},
        'parameters': {'learning_rate': {'distribution': 'log_uniform_values', 'min': 1e-4, 'max': 1e-2}, 'epochs': {'value': 3}}}
COUNT, ROUNDS = 5, 8

n_reads = [0]

def _read_results(out:Path, seen:dict, bad:list):
    "Parse results.csv as a user would, remembering every trial ever seen completed (and each unparseable read)."
    f = out/'results.csv'
    if not f.exists(): return
    n_reads[0] += 1
    try: r = pd.read_csv(f)
    except Exception as e: bad.append(f'{type(e).__name__}: {e}'); return
    for row in r[r.state == 'COMPLETE'].itertuples(): seen.setdefault(int(row.number), row.trial_dir)

def _trial_pids(out:Path) -> list[int]:
    pids = [int(p.read_text()) for p in (out/'trials').glob('*/pid') if p.read_text().strip()] if (out/'trials').exists() else []
    return [p for p in pids if alive(p)]

def test_killed_and_raced_sweeps(zygote, tmp_path):
    out, rng = tmp_path/'sw', random.Random(15)
    kw = dict(yaml_path=SPEC, count=COUNT, out=str(out), trainer_cmd=FAKE, preflight_check=False, heartbeat_s=1, max_failures=100, verbose=False)
    env = {'FAKE_EPOCH_S': '0.15'}
    seen, bad, kills = {}, [], []
    for rnd in range(ROUNDS):
        jobs = [zygote.start('finetune_kit.sweep:sweep', env=env, **kw, seed=rnd * 2 + i) for i in range(2)]   # two controllers race
        t_end = time.time() + rng.uniform(0.4, 2.0)
        while time.time() < t_end: _read_results(out, seen, bad); time.sleep(0.05)
        what = ('trial', 'controller', 'both')[rnd % 3]
        if what in ('trial', 'both'):
            t_end = time.time() + 5
            while not (pids := _trial_pids(out)) and time.time() < t_end: _read_results(out, seen, bad); time.sleep(0.05)
            if pids: os.kill(rng.choice(pids), signal.SIGKILL); kills.append('trial')
        if what in ('controller', 'both'):
            os.kill(rng.choice(jobs)['pid'], signal.SIGKILL); kills.append('controller')
        t_end = time.time() + rng.uniform(0.0, 0.8)
        while time.time() < t_end: _read_results(out, seen, bad); time.sleep(0.05)
        for j in jobs:
            if alive(j['pid']): os.kill(j['pid'], signal.SIGKILL)   # the rest of the round's controllers die too (not counted as tries)
        _read_results(out, seen, bad)
        if (out/'results.csv').exists(): pd.read_csv(out/'results.csv')   # at rest, after the kills: always whole
    t_final = time.time()
    final = [zygote.start('finetune_kit.sweep:sweep', env=env, **kw, seed=100 + i) for i in range(2)]   # the same command, until done
    t_end = time.time() + 120
    while any(alive(j['pid']) for j in final) and time.time() < t_end: _read_results(out, seen, bad); time.sleep(0.05)
    if any(alive(j['pid']) for j in final):
        for j in final: os.kill(j['pid'], signal.SIGKILL)
        study = optuna.load_study(study_name='race', storage=f"sqlite:///{out.resolve()/'study.db'}")
        stuck = [t.number for t in study.get_trials() if t.state.name == 'RUNNING' and 'trial_dir' not in t.user_attrs]
        record_row('killed and raced sweeps (2 controllers, SQLite)', len(kills), 0, 0, 0, None,
                   f'HUNG: trial(s) {stuck} stay RUNNING forever (a controller killed between study.ask() and its first heartbeat)')
        pytest.fail(f"a controller killed right after `study.ask()` left trial(s) {stuck} RUNNING with no heartbeat, so "
                     "they are never failed as stale and the resumed sweep waits forever (nbs/07c_sweep.ipynb `next_trial`: "
                     "record a heartbeat when asking)")
    rcs = [zygote.wait(j) for j in final]
    assert rcs == [0, 0], [Path(j['log']).read_text()[-2000:] for j in final]
    _read_results(out, seen, bad)
    study = optuna.load_study(study_name='race', storage=f"sqlite:///{out.resolve()/'study.db'}")
    done = [t for t in study.get_trials() if t.state.name == 'COMPLETE']
    r = pd.read_csv(out/'results.csv')
    lost = [n for n in seen if n not in {t.number for t in done}]                                   # completed once, then gone
    lost += [t.number for t in done if not (out/t.user_attrs['trial_dir']/'metrics.json').exists()]  # a result without its run
    dup = (len(done) - len({t.params['learning_rate'] for t in done})) + (len(done) - len({t.user_attrs['trial_dir'] for t in done}))
    dup += max(0, len(done) - COUNT) + int(r.number.duplicated().sum())
    at_rest = out/'results.csv'
    pd.read_csv(at_rest)
    record_row('killed and raced sweeps (2 controllers, SQLite)', len(kills), len(kills) if len(done) == COUNT else 0,
               len(lost), dup, None, f"{kills.count('controller')} controller + {kills.count('trial')} trial SIGKILLs in {ROUNDS} rounds; "
               f"{len(done)}/{COUNT} completed, {len(study.get_trials())} trials in all; results.csv polled {n_reads[0]} times, {len(bad)} unparseable")
    assert len(done) == COUNT and (r.state == 'COMPLETE').sum() == COUNT, len(done)
    if bad: pytest.fail(f"`run_local` (nbs/07c_sweep.ipynb) wrote results.csv in place, so a reader "
                         f"racing it can see half a file ({len(bad)} of {n_reads[0]} reads: {bad[0]}); `record` writes it atomically")
