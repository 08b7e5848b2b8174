"End-to-end and edge-case tests of `finetune_kit.tracking`: offline W&B runs read back with wandb's own reader."
import http.server, json, socket, subprocess, sys, threading, time
from dataclasses import dataclass
from pathlib import Path

import numpy as np, pytest, torch
from torch import nn
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
import fastai.callback.progress, fastai.callback.schedule  # noqa: F401 (patch `no_bar`, `fit_one_cycle`, `lr_find`)

from finetune_kit.tracking import (clean_config, has_wandb_login, wandb_reachable, resolve_mode, start_tracking,
    finish_tracking, WandbTracker, read_offline_run, peak_mem_gib, learner_config)

FAKE_KEY = 'fk' + '0123456789abcdef' * 2 + 'fedcba98'  # 42 chars, never a real key
WANDB_CLI = Path(sys.executable).parent / 'wandb'


def synth_learner(n=160, seed=0, cbs=None):
    "A tiny fastai Learner on random 4-d points, two parameter groups so `fine_tune` freezes one"
    torch.manual_seed(seed)
    x = torch.randn(n, 4); y = (x[:, 0] > 0).long()
    ds = list(zip(x, y)); cut = int(n * 0.8)
    dls = DataLoaders.from_dsets(ds[:cut], ds[cut:], bs=16, device='cpu')
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    return Learner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=accuracy, cbs=cbs,
                   splitter=lambda m: [list(m[0].parameters()), list(m[2].parameters())])


@pytest.fixture(autouse=True)
def offline_env(monkeypatch, tmp_path):
    "No login, offline, quiet; and no W&B run left open after a test"
    monkeypatch.setenv('WANDB_MODE', 'offline')
    monkeypatch.setenv('WANDB_SILENT', 'true')
    monkeypatch.delenv('WANDB_API_KEY', raising=False)
    monkeypatch.delenv('WANDB_BASE_URL', raising=False)
    monkeypatch.setenv('NETRC', str(tmp_path / 'no-netrc'))
    yield
    import wandb
    if wandb.run is not None: wandb.run.finish()


def fit_tracked(run_dir, config=None, fit=lambda l: l.fine_tune(2, 1e-2, freeze_epochs=1), cb=None, **kw):
    "Start a run, train the tiny learner with `fit`, finish; returns (session, learner, sync line)"
    sess = start_tracking(config or {'model_name': 'synth_mlp', 'learning_rate': 1e-2}, run_dir, **kw)
    learn = synth_learner()
    with learn.no_bar(), learn.no_logging(), learn.added_cbs(cb or WandbTracker()): fit(learn)
    line = finish_tracking(sess, {'valid_loss': float(learn.recorder.final_record[1])})
    return sess, learn, line


# --- no wandb for tracking: none -------------------------------------------------------------------------------------

NO_WANDB = """
import sys, importlib.abc
class NoWandb(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == 'wandb' or name.startswith('wandb.'): raise ImportError('wandb is not installed')
sys.meta_path.insert(0, NoWandb())
"""

def test_works_without_wandb_installed():
    "With wandb absent (timm imports it opportunistically when present), tracking 'none' needs none of it."
    code = NO_WANDB + ("import finetune_kit.tracking as t; from finetune_kit.config import TrainConfig; "
                       "assert 'fastai.callback.wandb' not in sys.modules; "
                       "assert t.finish_tracking(None, {'a': 1}) is None; "
                       "assert TrainConfig().tracking == 'none'")
    subprocess.run([sys.executable, '-c', code], check=True)

def test_tracking_module_itself_imports_no_wandb():
    "The tracking module imports wandb only inside the functions that need it."
    import ast, inspect
    tree = ast.parse(inspect.getsource(__import__('finetune_kit.tracking', fromlist=['x'])))
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top for a in n.names] + [n.module or '' for n in top if isinstance(n, ast.ImportFrom)]
    assert not [n for n in names if 'wandb' in n], names


def test_disabled_mode_gives_no_session(tmp_path):
    assert start_tracking({'a': 1}, tmp_path, mode='disabled') is None
    assert not (tmp_path / 'wandb').exists()


# --- config cleaning ---------------------------------------------------------------------------------------------------

def test_clean_config_drops_secrets_and_makes_values_plain(monkeypatch):
    monkeypatch.setenv('WANDB_API_KEY', FAKE_KEY)
    cfg = {'model_name': 'convnext_tiny', 'out': Path('runs/x'), 'img_size': (64, 64), 'lr': np.float32(0.5),
           'n': torch.tensor(3), 'WANDB_API_KEY': FAKE_KEY, 'hf-token': 'h', 'db_password': 'p', 'secret': 's',
           'credentials': 'c', 'url': f'https://u:{FAKE_KEY}@host', 'tokenizer': 'bpe', 'author': 'me',
           'nested': {'api_key': 'k', 'path': Path('/a')}}
    got = clean_config(cfg)
    assert got == {'model_name': 'convnext_tiny', 'out': 'runs/x', 'img_size': [64, 64], 'lr': 0.5, 'n': 3,
                   'tokenizer': 'bpe', 'author': 'me', 'nested': {'path': '/a'}}
    json.dumps(got)


def test_clean_config_accepts_a_dataclass():
    @dataclass
    class Cfg:
        model_name: str = 'resnet18'
        out: Path = Path('o')
        wandb_api_key: str = 'x'
    assert clean_config(Cfg()) == {'model_name': 'resnet18', 'out': 'o'}
    assert clean_config(None) == {}


# --- online / offline decision -----------------------------------------------------------------------------------------

def test_bad_mode_names_the_choices():
    with pytest.raises(ValueError, match='not one of'): resolve_mode('cloud')


def test_explicit_offline_and_env(monkeypatch):
    assert resolve_mode('offline') == 'offline'
    assert resolve_mode('dryrun') == 'offline'
    assert resolve_mode(None) == 'offline'  # WANDB_MODE=offline from the fixture
    monkeypatch.setenv('WANDB_MODE', 'disabled')
    assert resolve_mode(None) == 'disabled'


def test_no_login_goes_offline_even_when_online_asked(monkeypatch):
    monkeypatch.delenv('WANDB_MODE')
    assert not has_wandb_login()
    assert resolve_mode(None) == 'offline'
    assert resolve_mode('online') == 'offline'


def test_netrc_login_is_detected(monkeypatch, tmp_path):
    rc = tmp_path / 'netrc'; rc.write_text(f'machine api.wandb.ai\n  login user\n  password {FAKE_KEY}\n'); rc.chmod(0o600)
    monkeypatch.setenv('NETRC', str(rc))
    assert has_wandb_login()


def test_login_but_unreachable_goes_offline_fast(monkeypatch):
    monkeypatch.delenv('WANDB_MODE')
    monkeypatch.setenv('WANDB_API_KEY', FAKE_KEY)
    with socket.socket() as s:  # a port that nobody listens on
        s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    monkeypatch.setenv('WANDB_BASE_URL', f'http://127.0.0.1:{port}')
    t0 = time.time()
    assert resolve_mode(None) == 'offline'
    assert time.time() - t0 < 5


def test_silent_server_does_not_hang(monkeypatch):
    with socket.socket() as srv:  # accepts the TCP connection (backlog) but never answers, like a sandbox proxy
        srv.bind(('127.0.0.1', 0)); srv.listen()
        monkeypatch.setenv('WANDB_BASE_URL', f'http://127.0.0.1:{srv.getsockname()[1]}')
        t0 = time.time()
        assert wandb_reachable(timeout=1) is False
        assert time.time() - t0 < 3


def test_tls_mismatch_is_unreachable(monkeypatch):
    monkeypatch.setenv('WANDB_BASE_URL', 'https://10.255.255.1')  # nothing there, or a proxy with the wrong certificate
    assert wandb_reachable(timeout=1) is False


def test_login_and_reachable_goes_online(monkeypatch):
    monkeypatch.delenv('WANDB_MODE')
    monkeypatch.setenv('WANDB_API_KEY', FAKE_KEY)
    srv = http.server.HTTPServer(('127.0.0.1', 0), http.server.BaseHTTPRequestHandler)  # answers 501 to GET: fine
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv('WANDB_BASE_URL', f'http://127.0.0.1:{srv.server_port}')
        assert wandb_reachable() and resolve_mode(None) == 'online'
    finally: srv.shutdown(); srv.server_close()


def test_refused_online_run_falls_back_to_offline(monkeypatch, tmp_path):
    monkeypatch.delenv('WANDB_MODE')
    monkeypatch.setenv('WANDB_API_KEY', FAKE_KEY[:40])
    class Refuse(http.server.BaseHTTPRequestHandler):  # a server that refuses the key, as W&B's does a wrong one
        def _no(self): self.send_response(401); self.send_header('Content-Length', '0'); self.end_headers()
        do_GET = do_POST = _no
        def log_message(self, *a): pass
    srv = http.server.HTTPServer(('127.0.0.1', 0), Refuse)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv('WANDB_BASE_URL', f'http://127.0.0.1:{srv.server_port}')
        with pytest.warns(UserWarning, match='logging offline'): sess = start_tracking({'model_name': 'x'}, tmp_path)
    finally: srv.shutdown(); srv.server_close()
    assert sess.mode == 'offline'
    assert finish_tracking(sess, {'valid_loss': 0.5}) == f'wandb sync {sess.local_dir}'
    assert read_offline_run(tmp_path)['summary']['valid_loss'] == 0.5


# --- the offline round trip ------------------------------------------------------------------------------------------

def test_offline_fine_tune_round_trip(monkeypatch, tmp_path):
    monkeypatch.setenv('WANDB_API_KEY', FAKE_KEY)  # present, but must never reach a file
    run_dir = tmp_path / 'run'
    cfg = {'model_name': 'convnext_tiny.fb_in22k', 'learning_rate': 1e-2, 'epochs': 2, 'freeze_epochs': 1,
           'out': run_dir, 'wandb_api_key': FAKE_KEY, 'note': f'key {FAKE_KEY}'}
    sess, learn, line = fit_tracked(run_dir, cfg, group='g1', name='tiny')
    assert sess.mode == 'offline'

    # the sync line points at the run's own folder, which wandb agrees it can upload later
    assert line == f'wandb sync {sess.local_dir}'
    assert sess.local_dir.parent == run_dir / 'wandb' and list(sess.local_dir.glob('run-*.wandb'))
    dry = subprocess.run([str(WANDB_CLI), 'sync', '--dry-run', str(sess.local_dir)], capture_output=True, text=True)
    assert 'Would sync 1 run' in dry.stdout + dry.stderr

    rec = read_offline_run(run_dir)
    h = rec['history']
    assert h['epoch'].tolist() == [1, 2, 3] and h['_step'].tolist() == [0, 1, 2]
    assert h['frozen'].tolist() == [1, 0, 0]
    assert {'train_loss', 'valid_loss', 'accuracy', 'lr', 'epoch_time_s'} <= set(h.columns)
    assert np.allclose(h['valid_loss'].iloc[-1], learn.recorder.final_record[1])
    s = rec['summary']
    assert s['fit_time'] > 0 and 0 < s['peak_mem'] < 64 and 'GPU_mem' not in s  # a CPU run: no GPU label
    assert (s['model_family'], s['n_params'], s['epochs_done'], s['status']) == ('convnext', 114, 3, 'completed')
    assert (rec['state'], rec['exit_code']) == ('finished', 0)
    c = rec['config']
    assert c['out'] == str(run_dir) and c['learning_rate'] == 1e-2 and c['learner']['n_batches'] == 8
    assert 'wandb_api_key' not in c and 'note' not in c

    # the CLI reader named in the issue agrees
    out = subprocess.run([str(WANDB_CLI), 'leet', 'inspect', '--summary', '--json', str(sess.local_dir)],
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)['summary']['fit_time'] == s['fit_time']

    # the API key is in no file of the run folder
    for f in run_dir.rglob('*'):
        if f.is_file(): assert FAKE_KEY.encode() not in f.read_bytes(), f


def test_fit_then_fit_one_cycle_continue_the_run(tmp_path):
    def fit(l): l.fit(1, 1e-2); l.fit_one_cycle(2, 1e-2)
    _, _, _ = fit_tracked(tmp_path, fit=fit)
    h = read_offline_run(tmp_path)['history']
    assert h['epoch'].tolist() == [1, 2, 3] and h['_step'].is_monotonic_increasing


def test_separate_tracker_per_fit_keeps_counting(tmp_path):
    sess = start_tracking({'model_name': 'x'}, tmp_path)
    learn = synth_learner()
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, cbs=WandbTracker())
        learn.fit(1, cbs=WandbTracker())
    finish_tracking(sess, {})
    rec = read_offline_run(tmp_path)
    assert rec['history']['epoch'].tolist() == [1, 2] and rec['summary']['epochs_done'] == 2


def test_several_runs_in_one_process(tmp_path):
    cb = WandbTracker()  # one callback reused across runs, as a sweep might
    s1, _, l1 = fit_tracked(tmp_path / 'a', fit=lambda l: l.fit(2), cb=cb)
    s2 = start_tracking({'model_name': 'x'}, tmp_path / 'b')
    s3, _, l3 = fit_tracked(tmp_path / 'c', fit=lambda l: l.fit(1), cb=cb)  # reinit finishes the open run b
    assert len({s1.run.id, s2.run.id, s3.run.id}) == 3 and l1 != l3
    a, b, c = (read_offline_run(tmp_path / n) for n in 'abc')
    assert a['history']['epoch'].tolist() == [1, 2] and c['history']['epoch'].tolist() == [1]
    assert a['state'] == c['state'] == 'finished' and b['state'] == 'finished'


def test_failed_run_has_non_zero_exit_code(tmp_path):
    sess = start_tracking({'model_name': 'x'}, tmp_path)
    assert finish_tracking(sess, {'valid_loss': float('nan')}, status='failed: nan loss').startswith('wandb sync ')
    rec = read_offline_run(tmp_path)
    assert (rec['state'], rec['exit_code'], rec['summary']['status']) == ('failed', 1, 'failed: nan loss')


def test_pruned_run_is_not_failed(tmp_path):
    finish_tracking(start_tracking({'model_name': 'x'}, tmp_path), {}, status='pruned')
    assert read_offline_run(tmp_path)['exit_code'] == 0


def test_lr_find_is_not_logged(tmp_path):
    sess = start_tracking({'model_name': 'x'}, tmp_path)
    learn = synth_learner(cbs=WandbTracker())
    with learn.no_bar(), learn.no_logging():
        learn.lr_find(num_it=10, show_plot=False)
        learn.fit(1)
    finish_tracking(sess, {})
    assert read_offline_run(tmp_path)['history']['epoch'].tolist() == [1]


def test_log_preds_logs_a_table(tmp_path):
    sess, _, _ = fit_tracked(tmp_path, fit=lambda l: l.fit(1), cb=WandbTracker(log_preds=True, n_preds=5))
    rec = read_offline_run(tmp_path)
    assert rec['history']['predictions.nrows'].iloc[-1] == 5  # wandb flattens the table's reference
    tables = list(sess.local_dir.glob('files/media/table/*.json'))
    assert len(tables) == 1 and len(json.loads(tables[0].read_text())['data']) == 5


def test_tracker_needs_an_open_run():
    import wandb
    assert wandb.run is None
    learn = synth_learner()
    with pytest.raises(ValueError, match='start_tracking'), learn.no_bar(), learn.no_logging():
        learn.fit(1, cbs=WandbTracker())


def test_read_offline_run_errors_and_path_forms(tmp_path):
    with pytest.raises(FileNotFoundError, match='tracking=wandb'): read_offline_run(tmp_path)
    sess, _, _ = fit_tracked(tmp_path / 'r', fit=lambda l: l.fit(1))
    f = next(sess.local_dir.glob('run-*.wandb'))
    ids = {read_offline_run(p)['run_id'] for p in (tmp_path / 'r', tmp_path / 'r' / 'wandb', sess.local_dir, f)}
    assert ids == {sess.run.id}


# --- summary helpers and the upstream bug -----------------------------------------------------------------------------

def test_peak_mem_and_learner_config():
    assert 0 < peak_mem_gib() < 64 and 0 < peak_mem_gib('cpu') < 64
    cfg = learner_config(synth_learner())
    assert (cfg['bs'], cfg['n_train'], cfg['n_valid'], cfg['n_params'], cfg['metrics']) == (16, 128, 32, 114, ['accuracy'])
    json.dumps(cfg)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
def test_gpu_mem_on_cuda(tmp_path):
    sess = start_tracking({'model_name': 'x'}, tmp_path)
    learn = synth_learner(); learn.dls.to('cuda'); learn.model.cuda()
    with learn.no_bar(), learn.no_logging(): learn.fit(1, cbs=WandbTracker())
    finish_tracking(sess, {})
    s = read_offline_run(tmp_path)['summary']
    assert 0 < s['GPU_mem'] < 1 and s['peak_mem'] == s['GPU_mem']  # on a GPU, fastai_timm's name too


def test_upstream_wandbcallback_still_crashes(tmp_path):
    "Canary: fastai 2.8.12's WandbCallback fails in before_fit with current fastcore; if this fails, upstream is fixed"
    import wandb
    from fastai.callback.wandb import WandbCallback
    run = wandb.init(project='finetune_kit', dir=str(tmp_path), mode='offline')
    learn = synth_learner()
    with pytest.raises(TypeError, match=r'vars\(\) argument'), learn.no_bar(), learn.no_logging():
        learn.fit(1, cbs=WandbCallback(log_preds=False))
    run.finish()
