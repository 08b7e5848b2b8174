"Widgets driven from Python: set values, click buttons, read what they show; ipywidgets stays out of the core modules."
import ast, json, subprocess, sys, shutil, threading
from datetime import datetime, timezone
from pathlib import Path
import pandas as pd, pytest, yaml

import ipywidgets  # installed by the dev extra; a missing install must fail, not skip
from fastai.callback.core import Callback
from finetune_kit.training import train
from finetune_kit.inference import predict
from finetune_kit.datasets import sample_path
from finetune_kit.models import offline_models
from finetune_kit.analysis import read_runs, summarise, pareto_front
from finetune_kit.widgets import Launcher, Predictor, SweepExplorer, LiveFit, model_options
from conftest import copy_sample

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT/'tests'/'fixtures'/'analysis'/'sweep'
SHARED_CSV = ROOT.parent/'shared'/'data'/'fastai_timm_sweep_results.csv'
TINY = dict(img_size=32, batch_size=8, learning_rate=3e-3)
PNG = b'\x89PNG'


def is_png(v): return bytes(v).startswith(PNG)  # an `ipywidgets.Image` holds its bytes as a memoryview


@pytest.fixture(scope='module')
def tiny_folder(tmp_path_factory):
    "36 real Fashion-MNIST images of 3 classes (8 train, 4 valid each): 3 training batches of 8."
    return copy_sample(tmp_path_factory.mktemp('tiny'), 8, 4)


@pytest.fixture(scope='module')
def bundle(tiny_folder, tmp_path_factory):
    "A model bundle from one tiny epoch."
    out = tmp_path_factory.mktemp('bundle')/'run'
    return train(data=str(tiny_folder), epochs=1, out=str(out), verbose=False, **TINY).out/'model'


def launcher_for(tiny_folder, out, **kw):
    return Launcher(data=str(tiny_folder), out=str(out), **{**TINY, **kw})


class AfterFirstEpoch(Callback):
    "Call `f` once, when the first epoch ends."
    def __init__(self, f): self.f, self.done = f, False
    def after_epoch(self):
        if not self.done: self.done = True; self.f()


# ---------------------------------------------------------------- the layer

def test_core_modules_never_import_ipywidgets():
    mods = sorted(p.stem for p in (ROOT/'finetune_kit').glob('*.py') if p.stem not in ('widgets', '_modidx', '__init__'))
    code = (f"import sys, importlib, finetune_kit\n"
            f"for m in {mods!r}: importlib.import_module('finetune_kit.' + m)\n"
            f"print('ipywidgets' in sys.modules)")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == 'False'
    for p in (ROOT/'finetune_kit').glob('*.py'):
        tree = ast.parse(p.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or '' for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert p.stem == 'widgets' or not [m for m in names if m.startswith('ipywidgets')], p.name


def test_widgets_show_as_their_ui():
    e = SweepExplorer(SWEEP)
    b = e._repr_mimebundle_()
    assert b['text/plain'] == repr(e) and 'application/vnd.jupyter.widget-view+json' in b
    assert e.ui is e.ui  # built once


def test_model_options_offline_first():
    off = offline_models()
    opts = model_options(['resnet18', off[0]])
    assert [v for _, v in opts] == off + ['resnet18']  # an offline name passed again is not listed twice
    assert all(label == f'{v} (offline)' for label, v in opts[:len(off)]) and opts[-1] == ('resnet18', 'resnet18')


# ---------------------------------------------------------------- the launcher

def test_launcher_config_from_widgets(tiny_folder, tmp_path):
    la = launcher_for(tiny_folder, tmp_path/'run', max_items=20)
    assert (la.model.value, la.img_size.value, la.data.value) == ('efficientnet_lite0', 32, str(tiny_folder))
    assert la.overrides == dict(out=str(tmp_path/'run'), batch_size=8, max_items=20)
    la.model.value, la.lr.value, la.epochs.value, la.img_size.value = 'efficientnet_lite1', 10**-2.3, 3, 64
    cfg = la.config()
    assert (cfg.model_name, cfg.learning_rate, cfg.epochs, cfg.img_size) == ('efficientnet_lite1', 0.00501, 3, 64)
    assert (cfg.batch_size, cfg.max_items, cfg.out) == (8, 20, str(tmp_path/'run'))
    with pytest.raises(ValueError, match="did you mean 'batch_size'"): Launcher(batchsize=8)


def test_launcher_trains_and_shows_each_epoch(tiny_folder, tmp_path):
    la = launcher_for(tiny_folder, tmp_path/'run')
    la.epochs.value = 2
    tables, progress = [], []
    la.table.observe(lambda ch: tables.append(ch['new']), names='value')
    la.progress.observe(lambda ch: progress.append(ch['new']), names='value')
    la.run_btn.click()
    thread = la.thread
    assert thread.is_alive() and la.run_btn.disabled and not la.stop_btn.disabled and la.data.disabled
    la.run_btn.click()  # a second click while training does nothing
    assert la.thread is thread
    thread.join(timeout=900)
    assert not thread.is_alive() and la.error is None, la.error
    res = la.result
    assert res.status == 'completed' and not la.stopped and res.out == tmp_path/'run'
    assert 'completed: 2 epochs' in la.status.value and str(res.out) in la.status.value
    # the table and the plot were redrawn once per epoch, as it trained
    shown = [t for t in tables if t]
    assert len(shown) == 2 and shown[0].count('<tr') == 2 and shown[1].count('<tr') == 3  # header + rows
    assert la.history.equals(res.history) and la.history.equals(pd.read_csv(res.out/'history.csv'))
    assert list(la.history.epoch) == [1, 2]
    line = [l for l in la.fig.axes[0].lines if l.get_label() == 'valid_loss'][0]
    assert list(line.get_ydata()) == list(la.history.valid_loss) and is_png(la.plot.value)
    # progress moved batch by batch up to the end: 3 training batches an epoch
    steps = [p for p in progress if p > 0]
    assert steps == sorted(steps) and len(steps) == 6 and la.progress.value == 1
    assert not la.run_btn.disabled and la.stop_btn.disabled and not la.data.disabled
    cfg = yaml.safe_load((res.out/'config.yaml').read_text())
    assert (cfg['epochs'], cfg['img_size'], cfg['batch_size'], cfg['data']) == (2, 32, 8, str(tiny_folder))


def test_stop_ends_training_early(tiny_folder, tmp_path):
    la = launcher_for(tiny_folder, tmp_path/'run')
    la.epochs.value = 5
    la.cbs.append(AfterFirstEpoch(la.stop_btn.click))
    la.run(block=True)
    assert la.error is None, la.error
    assert la.stopped and len(la.history) == 1 and list(pd.read_csv(la.result.out/'history.csv').epoch) == [1]
    assert 'stopped after 1 of 5 epochs' in la.status.value and la.result.status == 'stopped: 1/5 epochs'
    assert json.loads((la.result.out/'metrics.json').read_text())['status'] == 'stopped: 1/5 epochs'
    state = json.loads((la.result.out/'checkpoint'/'state.json').read_text())
    assert state['done'] == 1
    # the run folder is complete: the first epoch's weights make a bundle that predicts
    img = next((tiny_folder/'valid'/'Bag').glob('*.png'))
    assert predict(la.result.out/'model', [img])[0]['label'] in ('Trouser', 'Bag', 'Sneaker')
    assert not la.run_btn.disabled and la.stop_btn.disabled


def test_stop_before_the_first_epoch(tiny_folder, tmp_path):
    "Nothing to evaluate: the run ends at once, recorded as stopped after 0 epochs, with no bundle."
    la = launcher_for(tiny_folder, tmp_path/'run')
    la.epochs.value = 3
    la.run()
    la.stop_btn.click()
    la.thread.join(timeout=900)
    assert la.error is None and la.result.status == 'stopped: 0/3 epochs', la.error
    assert la.stopped and la.history.empty and la.progress.value == 0
    assert 'stopped after 0 of 3 epochs' in la.status.value
    assert (tmp_path/'run'/'config.yaml').exists() and not (tmp_path/'run'/'model'/'model.json').exists()
    runs = read_runs(tmp_path/'run')
    assert runs.status[0] == 'stopped: 0/3 epochs' and not runs.ok[0]
    assert not la.run_btn.disabled and la.stop_btn.disabled


def test_livefit_with_train(tiny_folder, tmp_path):
    "`LiveFit` on its own: the history after each epoch, and a stop that keeps what was trained."
    seen = []
    live = LiveFit(on_epoch=lambda h: (seen.append(h.copy()), live.stop.set()))
    res = train(data=str(tiny_folder), epochs=2, out=str(tmp_path/'run'), verbose=False, cbs=[live], **TINY)
    assert [len(h) for h in seen] == [1] and seen[0].equals(res.history) and live.n == 3
    assert res.status == 'stopped: 1/2 epochs' and (res.out/'model'/'model.safetensors').exists()
    early = LiveFit(stop=threading.Event())
    early.stop.set()
    res = train(data=str(tiny_folder), out=str(tmp_path/'early'), verbose=False, cbs=[early], **TINY)
    assert res.status == 'stopped: 0/5 epochs' and 'accuracy' not in res.metrics and not (res.out/'model'/'model.json').exists()


def test_launcher_error_shown_in_status(tiny_folder, tmp_path):
    la = launcher_for(tiny_folder, tmp_path/'run')
    la.data.value = str(tmp_path/'no_such_folder')
    la.run(block=True)
    assert isinstance(la.error, FileNotFoundError) and la.result is None
    assert 'FileNotFoundError' in la.status.value and 'no_such_folder' in la.status.value
    assert not la.run_btn.disabled and la.stop_btn.disabled and not (tmp_path/'run').exists()


# ---------------------------------------------------------------- the predictor

def _bars(p):
    return [(b.children[0].value, b.children[1].value, b.children[2].value) for b in p.bars.children]


@pytest.mark.parametrize('k', [2, 3])
def test_predictor_bars_are_predicts_top_k(bundle, tiny_folder, k):
    p = Predictor(bundle, k=k)
    for img in sorted((tiny_folder/'valid').rglob('*.png'))[::6]:  # two images: each predict loads the bundle
        p.path.value = str(img)
        p.btn.click()
        top = predict(bundle, [img], k=k)[0]['top_k']
        assert _bars(p) == [(d['label'], d['probability'], f"{d['probability']:.1%}") for d in top]
        assert p.preds['label'] == top[0]['label'] and top[0]['label'] in p.status.value
        assert is_png(p.image.value)


def test_predictor_upload(bundle, tiny_folder):
    p = Predictor(bundle, k=3)
    img = next((tiny_folder/'valid'/'Trouser').glob('*.png'))
    p.upload.value = (dict(name='mine.png', type='image/png', size=img.stat().st_size,
                           content=memoryview(img.read_bytes()), last_modified=datetime.now(timezone.utc)),)
    assert Path(p.path.value).name == 'mine.png' and Path(p.path.value).read_bytes() == img.read_bytes()
    top = predict(bundle, [img], k=3)[0]['top_k']
    assert p.preds['top_k'] == top and [b[:2] for b in _bars(p)] == [(d['label'], d['probability']) for d in top]


def test_predictor_errors(bundle, tmp_path):
    p = Predictor(bundle)
    assert p.predict(tmp_path/'nope.png') is None
    assert 'FileNotFoundError' in p.status.value and 'nope.png' in p.status.value and p.bars.children == ()
    p.model_dir.value = str(tmp_path)
    p.path.value = str(next(sample_path().rglob('*.png')))
    p.btn.click()
    assert 'not a model bundle' in p.status.value and p.preds is None


# ---------------------------------------------------------------- the sweep explorer

def test_explorer_sweep_folder():
    e = SweepExplorer(SWEEP)
    summ = summarise(read_runs(SWEEP))
    assert e.dataset.options == ('sample',) and e.family.options == ('(all)', 'efficientnet', 'resnet')
    assert (e.x.value, e.y.value, e.hue.value) == ('fit_time_mean', 'error_rate_best', 'model_family')
    assert 'pareto' not in e.x.options and 'runs' not in e.y.options
    assert sorted(e.table.model_name) == sorted(summ.model_name)
    assert list(e.table.model_name[:3]) == ['efficientnet_lite1', 'efficientnet_lite0', 'resnet18']
    assert e.table.pareto.tolist() == [True, True, True, False]
    assert '3 models with both' in e.status.value and 'efficientnet_lite1' in e.html.value
    ax = e.fig.axes[0]
    assert ax.get_title() == 'sample: error_rate_best vs fit_time_mean' and is_png(e.plot.value)
    assert {t.get_text() for t in ax.texts} == {'efficientnet_lite1', 'efficientnet_lite0', 'resnet18'}


def test_explorer_updates_on_change():
    e = SweepExplorer(SWEEP)
    png = e.plot.value
    e.x.value = 'n_params_mean'  # lite0 is smaller and better than resnet18: resnet18 leaves the front
    assert e.table.pareto.tolist() == pareto_front(e.table, 'n_params_mean', 'error_rate_best').tolist()
    assert e.table.set_index('model_name').pareto.to_dict() == {'efficientnet_lite1': True, 'efficientnet_lite0': True,
                                                                'resnet18': False, 'efficientnet_lite9': False}
    assert e.plot.value != png and e.fig.axes[0].get_xlabel() == 'n_params_mean' and 'n_params_mean' in e.html.value
    e.family.value = 'resnet'
    assert list(e.table.model_name) == ['resnet18'] and e.table.pareto.all()
    e.hue.value = 'model_name'
    assert [t.get_text() for t in e.fig.axes[0].get_legend().get_texts()] == ['resnet18', 'Pareto front']


def test_explorer_uses_the_sweeps_metric_and_goal(tmp_path):
    from dataclasses import asdict
    from finetune_kit.sweep_spec import SweepSpec
    d = Path(shutil.copytree(SWEEP, tmp_path/'sweep'))
    spec = SweepSpec('grid', {'learning_rate': {'values': [3e-4, 1e-3]}}, {'data': 'sample'}, 'accuracy', 'maximize')
    (d/'sweep.yaml').write_text(yaml.safe_dump(asdict(spec)))
    e = SweepExplorer(d)
    assert (e.metric, e.goal, e.y.value) == ('accuracy', 'maximize', 'accuracy_best')
    runs = read_runs(d)
    ok = runs[runs.ok]
    assert e.table.model_name[0] == ok.loc[ok.accuracy.idxmax(), 'model_name']  # the best trial's model first
    assert e.table.accuracy_best.dropna().is_monotonic_decreasing and e.table.pareto[0]
    summ = summarise(runs, 'accuracy', goal='maximize')
    assert e.table.set_index('model_name').pareto.to_dict() == summ.set_index('model_name').pareto.to_dict()
    e = SweepExplorer(d, metric='error_rate')  # an explicit metric wins, with its own goal
    assert (e.goal, e.y.value) == ('minimize', 'error_rate_best') and e.table.error_rate_best.dropna().is_monotonic_increasing


def test_explorer_filters_with_no_points():
    runs = pd.DataFrame(dict(model_name=['resnet18', 'resnet34', 'convnext_tiny'], error_rate=[0.1, 0.08, None],
                             fit_time=[10., 20., None], status=['completed', 'completed', 'failed: nan loss']))
    e = SweepExplorer(runs)
    assert e.table.model_name.tolist()[:2] == ['resnet34', 'resnet18'] and e.fig is not None
    e.family.value = 'convnext'
    assert e.fig is None and e.plot.value == b'' and '0 models' in e.status.value


@pytest.fixture
def seeded(tmp_path, monkeypatch):
    "A cache seeded with the fastai_timm results, as CI and the notebooks do."
    if not SHARED_CSV.exists(): pytest.skip(f'shared data missing: {SHARED_CSV}')
    monkeypatch.setenv('FINETUNE_KIT_CACHE', str(tmp_path/'cache'))
    (tmp_path/'cache').mkdir()
    return Path(shutil.copy(SHARED_CSV, tmp_path/'cache'/'fastai_timm.csv'))


def test_explorer_fastai_timm(seeded):
    e = SweepExplorer(seeded, top=5)
    assert e.dataset.options == ('pets', 'planet') and len(e.runs) == 894
    assert set(e.table.dataset) == {'pets'} and e.html.value.count('<tr') == 6  # header + top 5
    e.dataset.value = 'planet'
    summ = summarise(read_runs(seeded))
    planet = summ[summ.dataset == 'planet']
    assert sorted(e.table.model_name) == sorted(planet.model_name)
    assert e.table.pareto.sum() == planet.pareto.sum()  # the default axes are summarise's own front
    e.y.value = 'valid_loss_mean'
    assert e.table.valid_loss_mean.dropna().is_monotonic_increasing and e.table.valid_loss_mean.iloc[-1:].isna().all()
    assert e.table.pareto.tolist() == pareto_front(e.table, 'fit_time_mean', 'valid_loss_mean').tolist()


# ---------------------------------------------------------------- the soup button

@pytest.fixture(scope='module')
def soup_sweep(tiny_folder, tmp_path_factory):
    "A sweep folder of two tiny trials at two learning rates, from the same start (seed 1), with a test split."
    sweep_dir = tmp_path_factory.mktemp('soup')/'sweep'
    for i, lr in enumerate((3e-3, 3e-2)):
        train(data=str(tiny_folder), model_name='test_efficientnet', pretrained=False, seed=1, epochs=2, test_pct=0.25,
              learning_rate=lr, img_size=32, batch_size=8, out=str(sweep_dir/'trials'/f'{i:04d}'), verbose=False)
    return sweep_dir


def test_explorer_soup_button(soup_sweep):
    e = SweepExplorer(soup_sweep)
    assert e.sweep_dir == soup_sweep and not e.soup_btn.disabled and e.top_k.value == 2 and e.soup_out.value == ''
    e.soup_btn.click()
    assert e.soup_error is None, e.soup_error
    out = soup_sweep/'soup'
    assert (out/'model.safetensors').exists() and (out/'model.json').exists()
    info = json.loads((out/'soup.json').read_text())
    assert e.soup_res['out'] == out and e.soup_res['kept'] == info['kept'] and len(info['ingredients']) == 2
    # the output names the bundle and soup.json, and compares the soup with the best trial on valid and test
    shown, m, best = e.soup_out.value, info['metric'], info['ingredients'][0]
    assert str(out) in shown and str(out/'soup.json') in shown and f"best trial ({info['best']})" in shown
    for split in ('valid', 'test'): assert f"{split} {info['soup'][split][m]:.4g} vs {best[split][m]:.4g}" in shown
    assert shown.count('<tr') == 4 and 'trials/0000' in shown and 'trials/0001' in shown  # header, 2 trials, the soup
    assert not e.soup_btn.disabled
    e.top_k.value = 1  # only the best trial: the soup is that trial
    e.soup_btn.click()
    assert [g['trial'] for g in e.soup_res['ingredients']] == [info['best']] and 'greedy soup of 1 of 1 trials' in e.soup_out.value


def test_explorer_soup_errors():
    e = SweepExplorer(SWEEP)  # the fixture's trials kept their metrics but no model bundles
    e.soup_btn.click()
    assert e.soup_res is None and isinstance(e.soup_error, ValueError) and not e.soup_btn.disabled
    assert 'ValueError' in e.soup_out.value and 'no finished trials' in e.soup_out.value and '\n' not in e.soup_out.value
    assert not (SWEEP/'soup').exists()
    assert SweepExplorer(read_runs(SWEEP)).soup_btn.disabled  # a DataFrame has no trials' weights to average
