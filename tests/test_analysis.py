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
    "Per (dataset, model): runs, failed, mean/std/min error, mean fit time and memory, score; with csv + loops."
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
            d['score'] = d['err_mean'] * (d['fit_mean'] + 80)
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
    need = ['dataset', 'model_name', 'model_family', 'runs', 'failed_runs', 'error_rate_mean', 'error_rate_std',
            'error_rate_min', 'fit_time_mean', 'GPU_mem_mean', 'score', 'pareto']
    assert set(need) <= set(s.columns)
    assert len(s) == len(ref) == 178
    for r in s.itertuples():
        d = ref[(r.dataset, r.model_name)]
        assert (r.runs, r.failed_runs) == (d['runs'], d['failed_runs'])
        if not d['runs']:
            assert math.isnan(r.error_rate_mean) and math.isnan(r.score) and not r.pareto
            continue
        for col, k in [('error_rate_mean', 'err_mean'), ('error_rate_min', 'err_min'), ('fit_time_mean', 'fit_mean'),
                       ('score', 'score'), ('error_rate_std', 'err_std'), ('GPU_mem_mean', 'mem_mean')]:
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
        pts = {m: (d['fit_mean'], d['err_mean']) for (dd, m), d in ref.items() if dd == ds and d['runs']}
        assert set(s[(s.dataset == ds) & s.pareto].model_name) == _plain_front(pts)
    front = set(s[(s.dataset == 'pets') & s.pareto].model_name)
    assert {'resnet18', 'convnext_tiny', 'convnext_base_in22ft1k'} <= front


def test_score_ranking_matches_plain_python(timm_runs):
    s, ref = summarise(timm_runs), _plain_summary(SHARED_CSV)
    for ds in ('pets', 'planet'):
        order = sorted((d['score'], m) for (dd, m), d in ref.items() if dd == ds and d['runs'])
        got = s[(s.dataset == ds) & s.score.notna()]
        assert list(got.model_name) == [m for _, m in order]
    assert s[s.dataset == 'pets'].iloc[0].model_name == 'convnext_tiny'
    assert s[s.dataset == 'planet'].iloc[0].model_name == 'convnext_tiny_in22k'


def test_filters_and_custom_score(timm_runs):
    s = summarise(timm_runs, max_mem=2, max_time=100)
    done = s[s.runs > 0]  # models with no completed run stay, so their crashes stay visible
    assert (done.GPU_mem_mean <= 2).all() and (done.fit_time_mean <= 100).all() and s[s.runs == 0].failed_runs.gt(0).all()
    ref = _plain_summary(SHARED_CSV)
    keep = {k for k, d in ref.items() if d['runs'] and d['mem_mean'] <= 2 and d['fit_mean'] <= 100}
    assert keep == set(zip(s.dataset, s.model_name)) - {k for k, d in ref.items() if not d['runs']}
    by_err = summarise(timm_runs, score=lambda d: d.error_rate_mean)
    pets = by_err[by_err.dataset == 'pets']
    assert pets.iloc[0].model_name == min((d['err_mean'], m) for (dd, m), d in ref.items() if dd == 'pets' and d['runs'])[1]


def test_pareto_front_edge_cases():
    df = pd.DataFrame(dict(fit_time_mean=[1, 1, 2, float('nan')], error_rate_mean=[0.5, 0.5, 0.4, 0.1]))
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
    assert one.fit_time == met['fit_time_s'] and one.GPU_mem == pytest.approx(met['peak_mem_mb'] / 1024)
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
    means = ok.groupby('model_name').agg(e=('error_rate', 'mean'), t=('fit_time', 'mean'))
    best_model = (means.e * (means.t + 80)).idxmin()
    best_run = ok[ok.model_name == best_model].sort_values('error_rate').iloc[0]
    assert cfg['model_name'] == best_model and cfg['learning_rate'] == best_run.learning_rate
    assert cfg['batch_size'] == best_run.batch_size and isinstance(cfg['img_size'], int)
    assert set(cfg) <= set(TRAIN_KEYS) and 'out' not in cfg and 'tracking' not in cfg
    train = pytest.importorskip('finetune_kit.train')
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


def test_report_with_no_completed_run(tmp_path):
    runs = pd.DataFrame(dict(model_name=['resnet18', 'resnet34'], error_rate=[None, 0.2], fit_time=[3.0, None]))
    paths = write_report(runs, tmp_path)
    assert 'best_config' not in paths and not (tmp_path/'best_config.yaml').exists()  # never a default config
    s = pd.read_csv(paths['summary'])
    assert s.runs.tolist() == [0, 0] and s.failed_runs.tolist() == [1, 1]
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
