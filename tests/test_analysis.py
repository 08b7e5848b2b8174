"Sweep analysis: aggregation, Pareto front and score on the real fastai_timm results, every input kind, the report."
import csv, json, math, os, re, shutil, statistics, subprocess, sys, textwrap, urllib.error, urllib.request
from collections import defaultdict
from pathlib import Path
import pandas as pd, pytest, yaml

from finetune_kit import analysis
from finetune_kit.analysis import (best_config, fastai_timm_results, failed_runs, lr_effect, param_importance,
                                   pareto_front, read_runs, read_wandb_offline, summarise, swept_params, write_report, TRAIN_KEYS)

ROOT = Path(__file__).resolve().parents[1]
SHARED_CSV = ROOT.parent/'shared'/'data'/'fastai_timm_sweep_results.csv'
SWEEP = ROOT/'tests'/'fixtures'/'analysis'/'sweep'


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    "Tests never download: any urlopen of a non-file URL fails."
    real = urllib.request.urlopen
    def guarded(url, *a, **kw):
        if not str(getattr(url, 'full_url', url)).startswith('file:'): raise urllib.error.URLError('network disabled in tests')
        return real(url, *a, **kw)
    monkeypatch.setattr(urllib.request, 'urlopen', guarded)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    "An empty FINETUNE_KIT_CACHE."
    d = tmp_path/'cache'
    monkeypatch.setenv('FINETUNE_KIT_CACHE', str(d))
    return d


@pytest.fixture
def seeded(cache):
    "The cache seeded with the fastai_timm results, as CI and the notebooks do."
    if not SHARED_CSV.exists(): pytest.skip(f'shared data missing: {SHARED_CSV}')
    cache.mkdir(parents=True, exist_ok=True)
    shutil.copy(SHARED_CSV, cache/'fastai_timm.csv')
    return cache/'fastai_timm.csv'


# ---------------------------------------------------------------- the download

def test_download_offline_names_the_path(cache):
    with pytest.raises(FileNotFoundError) as e: fastai_timm_results()
    assert str(cache/'fastai_timm.csv') in str(e.value) and 'tcapelle/fastai_timm' in str(e.value)
    assert not list(cache.glob('*.part'))


def test_download_writes_the_cache(cache):
    if not SHARED_CSV.exists(): pytest.skip(f'shared data missing: {SHARED_CSV}')
    p = fastai_timm_results(url=SHARED_CSV.as_uri())
    assert p == cache/'fastai_timm.csv' and p.read_bytes() == SHARED_CSV.read_bytes()
    assert fastai_timm_results() == p  # cached: no second download (the network is off)


def test_cached_file_is_used(seeded):
    assert fastai_timm_results() == seeded


# ---------------------------------------------------------------- aggregation on the real CSV, recomputed by hand

def _num(s):
    try: v = float(s)
    except (TypeError, ValueError): return None
    return v if math.isfinite(v) else None


def _plain_summary(path):
    "Per (dataset, model): runs, failed, mean/std/min error, mean fit time and memory, score on the best run; csv + loops."
    groups = defaultdict(list)
    with open(path) as f:
        for r in csv.DictReader(f): groups[(r['dataset'], r['model_name'])].append(r)
    out = {}
    for key, rows in groups.items():
        ok = [r for r in rows if _num(r['error_rate']) is not None and _num(r['fit_time']) is not None]
        errs, fits = [_num(r['error_rate']) for r in ok], [_num(r['fit_time']) for r in ok]
        mems = [_num(r['GPU_mem']) for r in ok if _num(r['GPU_mem']) is not None]
        d = dict(runs=len(ok), failed_runs=len(rows) - len(ok))
        if ok:
            d.update(err_mean=sum(errs) / len(errs), err_min=min(errs), fit_mean=sum(fits) / len(fits),
                     err_std=statistics.stdev(errs) if len(errs) > 1 else None,
                     mem_mean=sum(mems) / len(mems) if mems else None)
            d['score'] = d['err_min'] * (d['fit_mean'] + 80)
        out[key] = d
    return out


def _plain_front(points):
    "Keys of the points no other point beats on both coordinates."
    return {k for k, (x, y) in points.items()
            if not any(x2 <= x and y2 <= y and (x2 < x or y2 < y) for k2, (x2, y2) in points.items() if k2 != k)}


@pytest.fixture
def timm_runs(seeded): return read_runs(fastai_timm_results())


def test_runs_table_counts_crashes(timm_runs):
    assert len(timm_runs) == 894
    with open(SHARED_CSV) as f: rows = list(csv.DictReader(f))
    bad = sum(_num(r['error_rate']) is None or _num(r['fit_time']) is None for r in rows)
    assert (~timm_runs.ok).sum() == bad == 45
    assert set(timm_runs.loc[~timm_runs.ok, 'status']) == {'failed: no error_rate', 'failed: no fit_time'}
    assert failed_runs(timm_runs)['runs'].sum() == bad


def test_summary_matches_plain_python(timm_runs):
    s, ref = summarise(timm_runs), _plain_summary(SHARED_CSV)
    need = ['dataset', 'model_name', 'model_family', 'runs', 'failed_runs', 'error_rate_best', 'error_rate_mean',
            'error_rate_std', 'best_run', 'fit_time_mean', 'peak_mem_mean', 'score', 'pareto']
    assert set(need) <= set(s.columns)
    assert len(s) == len(ref) == 178
    for r in s.itertuples():
        d = ref[(r.dataset, r.model_name)]
        assert (r.runs, r.failed_runs) == (d['runs'], d['failed_runs'])
        if not d['runs']:
            assert math.isnan(r.error_rate_mean) and math.isnan(r.score) and not r.pareto
            continue
        for col, k in [('error_rate_mean', 'err_mean'), ('error_rate_best', 'err_min'), ('fit_time_mean', 'fit_mean'),
                       ('score', 'score'), ('error_rate_std', 'err_std'), ('peak_mem_mean', 'mem_mean')]:
            v = getattr(r, col)
            assert (math.isnan(v) if d[k] is None else v == pytest.approx(d[k], rel=1e-9)), (r.model_name, col)


def test_crashed_models_are_shown_not_averaged(timm_runs):
    s = summarise(timm_runs).set_index(['dataset', 'model_name'])
    dead = s.loc[('pets', 'mobilenetv3_small_100')]
    assert (dead.runs, dead.failed_runs) == (0, 6) and math.isnan(dead.error_rate_mean)
    # the swin_large runs that lost their fit time are not in the error mean either
    rows = timm_runs[(timm_runs.dataset == 'pets') & (timm_runs.model_name == 'swin_large_patch4_window7_224_in22k')]
    assert s.loc[('pets', 'swin_large_patch4_window7_224_in22k'), 'error_rate_mean'] == pytest.approx(rows[rows.ok].error_rate.mean())
    assert rows[rows.ok].error_rate.mean() != pytest.approx(rows.error_rate.mean())


def test_pareto_front_matches_plain_python(timm_runs):
    s, ref = summarise(timm_runs), _plain_summary(SHARED_CSV)
    for ds in ('pets', 'planet'):
        pts = {m: (d['fit_mean'], d['err_min']) for (dd, m), d in ref.items() if dd == ds and d['runs']}  # best run
        assert set(s[(s.dataset == ds) & s.pareto].model_name) == _plain_front(pts)
    front = set(s[(s.dataset == 'pets') & s.pareto].model_name)
    assert {'resnet18', 'convnext_tiny', 'convnext_base_in22ft1k'} <= front


def test_ranking_matches_plain_python(timm_runs):
    s, ref = summarise(timm_runs), _plain_summary(SHARED_CSV)
    for ds in ('pets', 'planet'):  # each model by its best run, ties by score
        order = sorted((d['err_min'], d['score'], m) for (dd, m), d in ref.items() if dd == ds and d['runs'])
        got = s[(s.dataset == ds) & s.score.notna()]
        assert list(got.model_name) == [m for *_, m in order]
    assert s[s.dataset == 'pets'].iloc[0].model_name == 'convnext_base_in22ft1k'  # 4.1% error in its best run
    assert s[s.dataset == 'planet'].iloc[0].model_name == 'swinv2_cr_small_ns_224'


def test_filters_and_custom_score(timm_runs):
    s = summarise(timm_runs, max_mem=2, max_time=100)
    done = s[s.runs > 0]  # models with no completed run stay, so their crashes stay visible
    assert (done.peak_mem_mean <= 2).all() and (done.fit_time_mean <= 100).all() and s[s.runs == 0].failed_runs.gt(0).all()
    ref = _plain_summary(SHARED_CSV)
    keep = {k for k, d in ref.items() if d['runs'] and d['mem_mean'] <= 2 and d['fit_mean'] <= 100}
    assert keep == set(zip(s.dataset, s.model_name)) - {k for k, d in ref.items() if not d['runs']}
    by_err = summarise(timm_runs, score=lambda d: d.error_rate_mean)  # a custom score fills the column, not the order
    assert by_err.score.equals(by_err.error_rate_mean) and by_err.error_rate_best.equals(summarise(timm_runs).error_rate_best)
    pets = by_err[by_err.dataset == 'pets']
    assert pets.iloc[0].model_name == min((d['err_min'], m) for (dd, m), d in ref.items() if dd == 'pets' and d['runs'])[1]


def test_pareto_front_edge_cases():
    df = pd.DataFrame(dict(fit_time_mean=[1, 1, 2, float('nan')], error_rate_best=[0.5, 0.5, 0.4, 0.1]))
    assert list(pareto_front(df)) == [True, True, True, False]  # ties both stay; NaN never on the front
    assert list(pareto_front(df.iloc[:0])) == []


# ---------------------------------------------------------------- every input kind

def test_local_sweep_folder():
    runs = read_runs(SWEEP)
    assert len(runs) == 16 and runs.ok.sum() == 12
    st = dict(zip(runs.run, runs.status))
    assert st['trials/0012'] == 'failed: nan loss' and st['trials/0013'] == 'pruned'
    assert st['trials/0014'].startswith('failed: exit code -9') and 'unknown model' in st['trials/0015']
    one = runs.set_index('run').loc['trials/0000']
    met = json.loads((SWEEP/'trials'/'0000'/'metrics.json').read_text())
    assert one.fit_time == met['fit_time_s'] and one.peak_mem == pytest.approx(met['peak_mem_mb'] / 1024)
    assert one.dataset == 'sample' and one.learning_rate == 3e-4
    s = summarise(runs).set_index('model_name')
    assert s.loc['efficientnet_lite1', ['runs', 'failed_runs']].tolist() == [4, 1]
    assert s.loc['efficientnet_lite9', ['runs', 'failed_runs']].tolist() == [0, 1]


def test_single_run_folder_and_incomplete(tmp_path):
    run = tmp_path/'run'
    shutil.copytree(SWEEP/'trials'/'0000', run)
    assert read_runs(run).ok.tolist() == [True]
    (run/'metrics.json').unlink()
    r = read_runs(run)
    assert r.ok.tolist() == [False] and r.status[0].startswith('incomplete')


def test_results_csv_export():
    runs = read_runs(SWEEP/'results.csv')
    assert len(runs) == 16 and runs.ok.sum() == 12
    assert set(runs[runs.ok].fit_time) == set(read_runs(SWEEP).query('ok').fit_time)


def _wandb_runs(d, kill=False):
    "Real offline W&B runs in `d`: two finished, one failed (exit code 1); or one killed mid-run."
    code = textwrap.dedent(f'''
        import os, wandb
        kill = {kill}
        for i, (lr, exit_code) in enumerate([(1e-3, 0), (3e-3, 0), (1e-2, 1)] if not kill else [(3e-2, None)]):
            run = wandb.init(mode='offline', dir={str(d)!r}, project='t', config=dict(model_name='resnet18',
                             learning_rate=lr, batch_size=32, data='sample', learner=dict(n_params=1)))
            for e in range(2): wandb.log(dict(epoch=e, valid_loss=0.5 - 0.1 * e, error_rate=0.2 + i / 100 - 0.01 * e))
            run.summary.update(dict(fit_time=10.0 + i, GPU_mem=0.5, n_params=11_000_000, status='completed'))
            if kill: os._exit(0)
            run.finish(exit_code=exit_code)
    ''')
    env = {**os.environ, 'WANDB_MODE': 'offline', 'WANDB_SILENT': 'true'}
    subprocess.run([sys.executable, '-c', code], check=True, env=env, timeout=300)


def test_wandb_offline_runs(tmp_path):
    pytest.importorskip('wandb')
    _wandb_runs(tmp_path)
    _wandb_runs(tmp_path, kill=True)  # wandb had flushed nothing: no config, no summary, state unknown
    assert len(list((tmp_path/'wandb').glob('offline-run-*'))) == 4
    runs = read_runs(tmp_path).sort_values('learning_rate', na_position='last').reset_index(drop=True)
    assert runs.learning_rate.tolist()[:3] == [1e-3, 3e-3, 1e-2]
    assert runs.ok.tolist() == [True, True, False, False]
    assert runs.status[2] == 'failed: W&B state failed' and runs.status[3].startswith('failed: W&B state')
    assert runs.error_rate[0] == pytest.approx(0.19) and runs.fit_time.tolist()[:2] == [10.0, 11.0]
    assert runs.dataset.tolist() == ['sample'] * 4 and 'learner' not in runs
    assert read_wandb_offline(tmp_path/'wandb').shape == runs.shape
    s = summarise(runs).set_index('model_name')
    assert s.loc['resnet18', ['runs', 'failed_runs']].tolist() == [2, 1]
    assert s.loc['(unknown)', ['runs', 'failed_runs']].tolist() == [0, 1]  # the killed run is counted, not lost


def test_wandb_killed_run_in_run_folder(tmp_path):
    pytest.importorskip('wandb')
    run_dir = tmp_path/'run'
    run_dir.mkdir()
    (run_dir/'config.yaml').write_text(yaml.safe_dump(dict(model_name='resnet18', learning_rate=3e-2, data='sample')))
    _wandb_runs(run_dir, kill=True)
    r = read_wandb_offline(run_dir/'wandb')
    assert (r.model_name[0], r.learning_rate[0], r.ok[0]) == ('resnet18', 3e-2, False)


def test_optuna_storage(tmp_path):
    optuna = pytest.importorskip('optuna')
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import TrialState, create_trial
    url = f"sqlite:///{tmp_path/'study.db'}"
    study = optuna.create_study(study_name='s', storage=url)
    dists = dict(model_name=CategoricalDistribution(['a_1', 'b_1']), learning_rate=FloatDistribution(1e-4, 1e-1, log=True))
    for i, (m, lr, state) in enumerate([('a_1', 1e-3, TrialState.COMPLETE), ('b_1', 1e-2, TrialState.COMPLETE),
                                        ('a_1', 1e-1, TrialState.FAIL), ('b_1', 1e-4, TrialState.PRUNED)]):
        done = state == TrialState.COMPLETE
        study.add_trial(create_trial(params=dict(model_name=m, learning_rate=lr), distributions=dists, state=state,
                                     value=0.3 + i / 10 if done else None,
                                     user_attrs=dict(config=dict(batch_size=32, data='sample', epochs=5), epochs=i,
                                                     trial_dir=f'trials/{i:04d}',
                                                     metrics=dict(error_rate=0.1 + i / 100, fit_time_s=20.0 + i) if done else {})))
    for src in (url, tmp_path/'study.db'):
        runs = read_runs(src)
        assert runs.run.tolist() == ['s/0', 's/1', 's/2', 's/3']
        assert runs.status.tolist() == ['completed', 'completed', 'failed: optuna trial failed', 'pruned']
        assert runs.ok.tolist() == [True, True, False, False]
        assert runs.error_rate.tolist()[:2] == [0.1, 0.11] and runs.fit_time.tolist()[:2] == [20.0, 21.0]
        assert runs.objective.tolist()[:2] == [0.3, 0.4] and runs.batch_size[0] == 32
        assert runs.epochs.tolist() == [5] * 4 and runs.epochs_run.tolist() == [0, 1, 2, 3]  # setting vs done


def test_unknown_source():
    with pytest.raises(ValueError, match='no/such/place'): read_runs('no/such/place')


# ---------------------------------------------------------------- importance, lr effect, best config

def test_importance_and_lr_effect():
    runs = read_runs(SWEEP)
    assert swept_params(runs) == ['model_name', 'learning_rate', 'batch_size']
    imp = param_importance(runs)
    assert set(imp.index) == {'model_name', 'learning_rate', 'batch_size'} and imp.sum() == pytest.approx(1)
    assert imp['learning_rate'] > imp['batch_size'] and imp['model_name'] > imp['batch_size']
    lre = lr_effect(runs).set_index('model_name')
    ok = runs[runs.ok]
    for m, g in ok.groupby('model_name'):
        assert lre.loc[m, 'best_learning_rate'] == g.loc[g.error_rate.idxmin(), 'learning_rate']


def test_best_config_is_a_train_config(tmp_path):
    runs = read_runs(SWEEP)
    cfg = best_config(runs)
    ok = runs[runs.ok]
    best_run = ok.sort_values('error_rate').iloc[0]  # no sweep.yaml: error rate, minimised
    assert cfg['model_name'] == best_run.model_name and cfg['learning_rate'] == best_run.learning_rate
    assert cfg['batch_size'] == best_run.batch_size and isinstance(cfg['img_size'], int)
    assert set(cfg) <= set(TRAIN_KEYS) and 'out' not in cfg and 'tracking' not in cfg
    train = pytest.importorskip('finetune_kit.training')
    p = analysis.save_best_config(cfg, tmp_path/'best.yaml', 'best')
    tc = train.TrainConfig.from_yaml(p)
    assert (tc.model_name, tc.learning_rate, tc.batch_size) == (cfg['model_name'], cfg['learning_rate'], cfg['batch_size'])


# ---------------------------------------------------------------- the report

def test_write_report_files(tmp_path):
    paths = write_report(SWEEP, tmp_path/'rep')
    names = {p.name for p in (tmp_path/'rep').iterdir()}
    assert {'summary.csv', 'best_config.yaml', 'report.html', 'sample_pareto.png', 'sample_score.png',
            'sample_importance.png', 'sample_lr_effect.png', 'sample_parallel.png'} <= names
    assert all(Path(p).exists() for p in paths.values())
    s = pd.read_csv(paths['summary'])
    assert s.failed_runs.sum() == 4 and s.runs.sum() == 12
    assert yaml.safe_load(paths['best_config'].read_text()) == best_config(read_runs(SWEEP))
    html = paths['report'].read_text()
    assert 'src="http' not in html and 'href="http' not in html and html.count('<img') == 5
    with pytest.raises(ValueError, match='nope'): write_report(SWEEP, tmp_path/'x', dataset='nope')


def test_report_with_a_dataset_with_no_completed_run(tmp_path):
    runs = pd.DataFrame(dict(model_name=['resnet18', 'resnet34', 'resnet18'], error_rate=[None, 0.2, 0.1],
                             fit_time=[3.0, None, 4.0], dataset=['a', 'a', 'b']))
    paths = write_report(runs, tmp_path)
    assert 'a_best_config' not in paths and not (tmp_path/'best_config_a.yaml').exists()  # never a default config
    assert yaml.safe_load(paths['best_config'].read_text()) == {'model_name': 'resnet18'}  # dataset b's
    s = pd.read_csv(paths['summary'])
    assert s.runs.tolist() == [0, 0, 1] and s.failed_runs.tolist() == [1, 1, 0]
    assert 'none: no run completed' in paths['report'].read_text()


def _chromium():
    return shutil.which('chromium') or shutil.which('chromium-browser') or shutil.which('google-chrome')


IMG_PROBE = ("<script>window.addEventListener('load', () => {document.body.insertAdjacentHTML('beforeend', "
             "'<pre id=\"pro' + 'be\">' + JSON.stringify([...document.images].map(i => [i.complete, i.naturalWidth, "
             "i.naturalHeight])) + '</pre>')});</script>")


def test_report_in_headless_chromium(seeded, tmp_path):
    exe = _chromium()
    if not exe: pytest.skip('chromium is not installed (apt-get install -y chromium): cannot open report.html headless')
    paths = write_report(fastai_timm_results(), tmp_path/'rep')
    html = paths['report'].read_text()
    n_img = html.count('<img')
    assert n_img == len(list((tmp_path/'rep').glob('*.png'))) == 4  # pareto + score for pets and planet
    page = tmp_path/'probe.html'
    page.write_text(html.replace('</body>', IMG_PROBE + '</body>'))
    cmd = [exe, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync',
           f'--user-data-dir={tmp_path/"chrome"}', '--run-all-compositor-stages-before-draw',
           '--virtual-time-budget=5000', '--dump-dom', page.as_uri()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="probe">(.*?)</pre>', r.stdout)
    assert m, f'no probe in the DOM (rc={r.returncode}): {r.stderr[-800:]}'
    imgs = json.loads(m.group(1))
    assert len(imgs) == n_img and all(c and w > 100 and h > 100 for c, w, h in imgs), imgs
    assert 'convnext_tiny' in r.stdout and 'mobilenetv3_small_100' in r.stdout  # best model and crashed model shown


# ---------------------------------------------------------------- the sweep's own metric and goal (issue 11)

def _trial_cfg(runs, run):
    "The train config of run `run`, as best_config writes it."
    r = runs.set_index('run').loc[run]
    return {k: analysis._config_value(k, r[k]) for k in TRAIN_KEYS if k in r and pd.notna(r[k])}


def _sweep_with_spec(tmp_path, metric='accuracy', goal='maximize'):
    "The fixture sweep copied, with the `sweep.yaml` that `finetune-kit sweep` writes (a dump of its SweepSpec)."
    from dataclasses import asdict
    from finetune_kit.sweep_spec import SweepSpec
    d = tmp_path/'sweep'
    shutil.copytree(SWEEP, d)
    spec = SweepSpec('grid', {'learning_rate': {'values': [3e-4, 1e-3, 3e-3, 1e-2]}}, {'data': 'sample'}, metric, goal)
    (d/'sweep.yaml').write_text(yaml.safe_dump(asdict(spec), sort_keys=True))
    return d


GRID_ACC = pd.DataFrame(dict(  # the grid: maximise accuracy over three learning rates
    run=['t0', 't1', 't2'], model_name='resnet18', learning_rate=[5e-4, 3e-3, 5e-2], batch_size=32, data='pets',
    accuracy=[0.62, 0.71, 0.13], valid_loss=[1.1, 0.9, 2.6], fit_time=[60., 61., 59.]))

BAYES = pd.DataFrame(dict(  # the bayes sweep: lite0 has the best trial, lite1 the best mean
    run=[f'trials/{i:04d}' for i in range(8)],
    model_name=['efficientnet_lite1', 'efficientnet_lite0', 'efficientnet_lite2', 'efficientnet_lite0',
                'efficientnet_lite1', 'efficientnet_lite0', 'efficientnet_lite2', 'efficientnet_lite1'],
    learning_rate=[1.1e-3, 1.8e-3, 4e-4, 9e-3, 8e-4, 7e-3, 2e-3, 1.5e-3],
    batch_size=[32, 16, 64, 32, 16, 64, 32, 32], data='sample',
    valid_loss=[0.722, 0.571, 0.95, 1.9, 0.75, 2.3, 0.88, 0.81], fit_time=[40., 35., 50., 36., 41., 34., 52., 40.]))


def test_metric_goals_registry():
    g = analysis.METRIC_GOALS
    assert all(g[m] == 'minimize' for m in ('valid_loss', 'train_loss', 'error_rate', 'fit_time', 'fit_time_s', 'GPU_mem',
                                             'peak_mem'))
    assert all(g[m] == 'maximize' for m in ('accuracy', 'accuracy_multi', 'roc_auc', 'f1', 'precision', 'recall',
                                             'fbeta_multi'))
    from finetune_kit.sweep_spec import METRICS
    assert set(METRICS) <= set(g)  # every metric a sweep may optimise has a direction


def test_maximised_metric_picks_the_highest(tmp_path):
    cfg = best_config(read_runs(GRID_ACC), metric='accuracy')
    assert cfg['learning_rate'] == 3e-3  # accuracy 0.71, not 0.13
    paths = write_report(GRID_ACC, tmp_path/'rep', metric='accuracy')
    assert yaml.safe_load(paths['best_config'].read_text())['learning_rate'] == 3e-3
    s = pd.read_csv(paths['summary'])
    assert 'accuracy_min' not in s and s.accuracy_best[0] == 0.71 and s.accuracy_mean[0] == pytest.approx(1.46 / 3)
    # the fixture sweep: per model the highest accuracy, and the table led by the model of the best trial
    runs = read_runs(SWEEP)
    ok = runs[runs.ok]
    s = summarise(runs, 'accuracy').set_index('model_name')
    assert s.accuracy_best.dropna().to_dict() == ok.groupby('model_name').accuracy.max().to_dict()
    top = ok.loc[ok.accuracy.idxmax()]
    assert s.index[0] == top.model_name and s.best_run.iloc[0] == top.run
    assert best_config(runs, metric='accuracy') == _trial_cfg(runs, top.run)
    assert best_config(runs, metric='accuracy', goal='minimize') == _trial_cfg(runs, ok.loc[ok.accuracy.idxmin()].run)


def test_best_config_is_the_best_trial_not_the_best_mean(tmp_path):
    runs = read_runs(BAYES)
    cfg = best_config(runs, metric='valid_loss')
    assert (cfg['model_name'], cfg['learning_rate'], cfg['batch_size']) == ('efficientnet_lite0', 1.8e-3, 16)
    s = summarise(runs, 'valid_loss')
    assert s.model_name.tolist() == ['efficientnet_lite0', 'efficientnet_lite1', 'efficientnet_lite2']  # by best trial
    assert s.valid_loss_best.tolist() == [0.571, 0.722, 0.88]
    assert s.valid_loss_mean[0] == pytest.approx((0.571 + 1.9 + 2.3) / 3)  # the robustness column: lite0 is fragile
    assert s.valid_loss_mean[0] > s.valid_loss_mean[1] and 'valid_loss_std' in s and s.best_run[0] == 'trials/0001'
    assert pareto_front(s, 'fit_time_mean', 'valid_loss_best')[0]


def test_pareto_front_respects_the_goal():
    df = pd.DataFrame(dict(fit_time_mean=[10, 5, 20, 15], accuracy_best=[0.9, 0.8, 0.95, 0.85]))
    assert list(pareto_front(df, y='accuracy_best', y_goal='maximize')) == [True, True, True, False]
    assert list(pareto_front(df, y='accuracy_best')) == [False, True, False, False]  # minimised, only the fastest
    s = summarise(read_runs(SWEEP), 'accuracy')
    assert s.pareto.tolist() == pareto_front(s, 'fit_time_mean', 'accuracy_best', y_goal='maximize').tolist()
    assert s.pareto[0]  # the model of the best trial is always on the front


def test_sweep_yaml_decides_and_flags_override(tmp_path):
    d = _sweep_with_spec(tmp_path)
    assert analysis.sweep_objective(d) == ('accuracy', 'maximize')
    assert analysis.sweep_objective(d/'results.csv') == ('accuracy', 'maximize')
    assert analysis.sweep_objective(SWEEP) == ('error_rate', 'minimize')  # no sweep.yaml: the default
    runs = read_runs(d)
    ok = runs[runs.ok]
    paths = write_report(d, tmp_path/'rep')
    assert 'accuracy_best' in pd.read_csv(paths['summary'])
    assert yaml.safe_load(paths['best_config'].read_text()) == _trial_cfg(runs, ok.loc[ok.accuracy.idxmax()].run)
    paths = write_report(d, tmp_path/'fast', metric='fit_time')  # --metric: the fastest trial; its own goal
    assert 'fit_time_best' in pd.read_csv(paths['summary'])
    assert yaml.safe_load(paths['best_config'].read_text()) == _trial_cfg(runs, ok.loc[ok.fit_time.idxmin()].run)
    paths = write_report(d, tmp_path/'worst', goal='minimize')  # --goal alone keeps the sweep's metric
    assert yaml.safe_load(paths['best_config'].read_text()) == _trial_cfg(runs, ok.loc[ok.accuracy.idxmin()].run)
    with pytest.raises(ValueError, match='f1'): write_report(d, tmp_path/'x', metric='f1')  # not recorded
    with pytest.raises(ValueError, match='goal'): write_report(d, tmp_path/'y', goal='max')


def test_optuna_study_direction_decides(tmp_path):
    optuna = pytest.importorskip('optuna')
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial
    url = f"sqlite:///{tmp_path/'study.db'}"
    study = optuna.create_study(study_name='s', storage=url, direction='maximize')
    for lr, v in [(1e-3, 0.7), (1e-2, 0.9), (1e-1, 0.2)]:
        study.add_trial(create_trial(params=dict(learning_rate=lr), value=v,
                                     distributions=dict(learning_rate=FloatDistribution(1e-4, 1, log=True)),
                                     user_attrs=dict(config=dict(model_name='resnet18', data='sample'),
                                                     metrics=dict(fit_time_s=10.0))))
    assert analysis.sweep_objective(url) == ('objective', 'maximize')
    paths = write_report(url, tmp_path/'rep')
    assert yaml.safe_load(paths['best_config'].read_text())['learning_rate'] == 1e-2


def _failed_sweep(tmp_path):
    "The fixture sweep with only its four failed or incomplete trials."
    d = tmp_path/'failed'
    shutil.copytree(SWEEP, d)
    res = pd.read_csv(d/'results.csv')
    for t in res[res.status == 'completed'].trial_dir: shutil.rmtree(d/t)
    res[res.status != 'completed'].to_csv(d/'results.csv', index=False)
    return d


def test_all_failed_sweep_raises(tmp_path):
    d = _failed_sweep(tmp_path)
    with pytest.raises(ValueError) as e: write_report(d, tmp_path/'rep')
    msg = str(e.value)
    assert 'no completed runs' in msg and str(d) in msg and '4 runs' in msg and '\n' not in msg
    assert not (tmp_path/'rep').exists()  # nothing misleading written
    runs = pd.DataFrame(dict(model_name=['resnet18', 'resnet34'], error_rate=[None, 0.2], fit_time=[3.0, None]))
    with pytest.raises(ValueError, match='no completed runs'): write_report(runs, tmp_path/'rep2')


def _report_parts(paths):
    "The report's best-config YAML, and the first row of its first table (header -> cell text)."
    import html as H
    text = paths['report'].read_text()
    pre = re.search(r'<h3>Best config</h3>.*?<pre>(.*?)</pre>', text, re.S).group(1)
    table = re.search(r'<h3>Best .*?</h3>\s*(<table.*?</table>)', text, re.S).group(1)
    head, row = re.findall(r'<th>(.*?)</th>', table), re.search(r'<tbody>\s*<tr>(.*?)</tr>', table, re.S).group(1)
    return yaml.safe_load(H.unescape(pre)), dict(zip(head, map(H.unescape, re.findall(r'<td>(.*?)</td>', row))))


@pytest.mark.parametrize('src,metric', [('sweep', None), ('sweep', 'accuracy'), ('bayes', 'valid_loss'),
                                        ('grid', 'accuracy')])
def test_report_and_best_config_agree(tmp_path, src, metric):
    source = {'sweep': SWEEP, 'bayes': BAYES, 'grid': GRID_ACC}[src]
    paths = write_report(source, tmp_path/'rep', metric=metric)
    m = metric or 'error_rate'
    runs = read_runs(source)
    ok = runs[runs.ok].dropna(subset=[m])
    best = ok.loc[ok[m].idxmin() if analysis.METRIC_GOALS[m] == 'minimize' else ok[m].idxmax()]
    cfg = yaml.safe_load(paths['best_config'].read_text())
    assert cfg == _trial_cfg(runs, best.run)  # best_config.yaml is the best trial
    pre, first = _report_parts(paths)
    assert pre == cfg  # the report's best-config section
    assert first['model_name'] == cfg['model_name'] and first['best_run'] == best.run  # the report's first table
    s = pd.read_csv(paths['summary'])
    assert s.model_name[0] == cfg['model_name'] and s.pareto[0]  # summary.csv, the Pareto front
    lre = lr_effect(runs, m).set_index('model_name')  # the learning-rate chart's best point
    assert lre.loc[cfg['model_name'], 'best_learning_rate'] == cfg['learning_rate']
    assert f'{m}_min' not in paths['report'].read_text()


def test_peak_mem_is_the_neutral_label(timm_runs):
    runs = read_runs(SWEEP)  # CPU runs: metrics.json's peak_mem_mb
    assert runs.peak_mem.notna().sum() == 13 and 'GPU_mem' not in runs
    s = summarise(runs)
    assert 'peak_mem_mean' in s and not [c for c in s if 'GPU' in c]
    assert timm_runs.peak_mem.equals(timm_runs.GPU_mem)  # fastai_timm's GPU_mem is read as peak_mem
    assert summarise(timm_runs, max_mem=2).peak_mem_mean.max() <= 2
