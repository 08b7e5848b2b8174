"End-to-end training: config sources, CLI errors, run folder, bundle predictions, NaN, kill-and-resume, W&B offline."
import os, sys, json, time, signal, subprocess
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch, yaml
from PIL import Image
from finetune_kit.config import TrainConfig
from finetune_kit.training import train
from finetune_kit.inference import predict, load_bundle
from finetune_kit.datasets import sample_path
from fastai.callback.core import Callback
from conftest import run_cli, BIN, copy_sample

TINY = dict(img_size=32, batch_size=16, epochs=1, learning_rate=3e-3)

@pytest.fixture(scope='session')
def tiny_folder(tmp_path_factory):
    "30 real Fashion-MNIST images of 3 classes, with train/ and valid/ folders."
    return copy_sample(tmp_path_factory.mktemp('tiny'), 7, 3)

def test_config_sources_agree(tmp_path):
    "YAML file, CLI-style strings and a W&B config dict give the same config; unknown keys are refused."
    (tmp_path/'c.yaml').write_text('learning_rate: 0.003\nbatch_size: 32\npretrained: false\n')
    a = TrainConfig.from_yaml(tmp_path/'c.yaml')
    b = TrainConfig.from_dict({'learning_rate': '0.003', 'batch_size': '32', 'pretrained': 'false'})
    assert a == b and a.batch_size == 32 and a.pretrained is False
    assert TrainConfig.from_yaml(tmp_path/'c.yaml', batch_size='8').batch_size == 8
    with pytest.raises(ValueError, match="did you mean 'batch_size'"): TrainConfig.from_dict({'batchsize': 3})

@pytest.mark.parametrize('args,msg', [
    (['--data', '/no/such/folder'], 'no/such/folder'),
    (['--model_name', 'efficientnet_lite00'], 'Did you mean'),
    (['--batch_size', 'many'], "batch_size='many'"),
    (['--resize_method', 'stretch'], 'resize_method'),
    (['--config', '/no/such.yaml'], 'no/such.yaml'),
    (['--epochs', '0', '--freeze_epochs', '0'], 'at least one epoch'),
])
def test_cli_bad_input_one_line(args, msg, tmp_path):
    r = run_cli('train', *args, '--out', tmp_path/'run', timeout=300)
    assert r.returncode == 2, r.stderr
    assert 'Traceback' not in r.stderr and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr

def test_cli_bad_yaml_key(tmp_path):
    (tmp_path/'c.yaml').write_text('learning_rte: 0.01\n')
    r = run_cli('train', '--config', tmp_path/'c.yaml')
    assert r.returncode == 2 and "did you mean 'learning_rate'" in r.stderr and 'Traceback' not in r.stderr

def test_run_folder_and_bundle_predictions(tiny_folder, tmp_path):
    "The CLI writes the whole run folder; predictions from the bundle match the learner's own."
    out = tmp_path/'run'
    r = run_cli('train', '--data', tiny_folder, '--out', out, *[f'--{k}={v}' for k,v in TINY.items()], '--freeze_epochs=1')
    assert r.returncode == 0, r.stderr[-2000:]
    for f in ('config.yaml', 'metrics.json', 'history.csv', 'loss.png', 'confusion_matrix.png', 'top_losses.png',
              'model/model.safetensors', 'model/model.json'):
        assert (out/f).is_file(), f
    m = json.loads((out/'metrics.json').read_text())
    assert m['status'] == 'completed' and m['task'] == 'single' and 0 <= m['accuracy'] <= 1
    for k in ('valid_loss', 'fit_time_s', 'images_per_s', 'peak_mem_mb', 'n_params', 'model_family', 'hardware', 'versions'):
        assert k in m, k
    h = pd.read_csv(out/'history.csv')
    assert list(h.phase) == ['frozen', 'unfrozen'] and list(h.epoch) == [1, 2]
    assert yaml.safe_load((out/'config.yaml').read_text())['freeze_epochs'] == 1
    # predictions from the bundle (CLI, JSON lines) vs in-process
    imgs = sorted((tiny_folder/'valid').rglob('*.png'))
    r = run_cli('predict', '--model-dir', out/'model', *imgs)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    assert len(lines) == len(imgs) and all(l['label'] in ('Trouser', 'Bag', 'Sneaker') for l in lines)
    res = train(data=str(tiny_folder), out=str(tmp_path/'run2'), verbose=False, **TINY)
    learn = res.learn
    ours = predict(res.out/'model', imgs)
    for img, p in zip(imgs, ours):
        lbl, idx, probs = learn.predict(img)
        assert p['label'] == lbl
        np.testing.assert_allclose(p['probability'], float(probs.max()), atol=1e-4)

class Diverge(Callback):
    "Make the weights blow up after a few batches, as a too-high learning rate does."
    def after_step(self):
        if self.training and self.epoch == 0 and self.iter == 0:
            with torch.no_grad(): self.model.get_classifier().weight.fill_(float('inf'))

def test_nan_loss_is_a_failure(tiny_folder, tmp_path):
    res = train(data=str(tiny_folder), out=str(tmp_path/'nan'), verbose=False, cbs=[Diverge()], **{**TINY, 'epochs': 3})
    assert res.status == 'failed: nan loss'
    m = json.loads((tmp_path/'nan'/'metrics.json').read_text())
    assert m['status'] == 'failed: nan loss' and 'accuracy' not in m
    assert len(res.history) < 3  # stopped early, not after all epochs

def test_kill_and_resume(tiny_folder, tmp_path):
    "SIGKILL after the first epoch; --resume finishes the remaining epochs without redoing the first."
    out = tmp_path/'run'
    args = ['train', '--data', str(tiny_folder), '--out', str(out), '--img_size=32', '--batch_size=8', '--epochs=3',
            '--freeze_epochs=1', '--learning_rate=0.003']
    p = subprocess.Popen([str(BIN/'finetune-kit'), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out/'checkpoint'/'state.json'
    t = time.time()
    while time.time() - t < 300:
        if state.exists() and json.loads(state.read_text())['phase'] == 'unfrozen': break
        if p.poll() is not None: break
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL); p.wait()
    done = json.loads(state.read_text())
    assert done['phase'] == 'unfrozen' and done['epoch'] < 3, done
    assert not (out/'metrics.json').exists()
    r = run_cli('train', '--resume', '--out', out)
    assert r.returncode == 0, r.stderr[-2000:]
    h = pd.read_csv(out/'history.csv')
    assert list(h.epoch) == [1, 2, 3, 4] and list(h.phase) == ['frozen'] + ['unfrozen'] * 3
    assert json.loads((out/'metrics.json').read_text())['status'] == 'completed'

def test_batch_larger_than_data(tiny_folder, tmp_path):
    r = run_cli('train', '--data', tiny_folder, '--out', tmp_path/'r', '--img_size=32', '--batch_size=64')
    assert r.returncode == 2 and 'batch_size=64 is larger than the 21 training images' in r.stderr

def test_resume_needs_a_checkpoint(tmp_path):
    r = run_cli('train', '--resume', '--out', tmp_path/'nothing')
    assert r.returncode == 2 and 'checkpoint' in r.stderr

def test_wandb_offline_run_reads_back(tiny_folder, tmp_path):
    "tracking=wandb with no login: an offline run that wandb's own reader loads with history and summary."
    from finetune_kit.tracking import read_offline_run
    out = tmp_path/'run'
    r = run_cli('train', '--data', tiny_folder, '--out', out, '--tracking=wandb', '--img_size=32', '--epochs=2', '--batch_size=8',
                env={'WANDB_MODE': 'offline', 'WANDB_API_KEY': ''})
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'wandb sync' in r.stdout
    run = read_offline_run(out)
    h = run['history']
    assert list(h.epoch) == [1, 2] and h.train_loss.notna().all() and h.valid_loss.notna().all()
    np.testing.assert_allclose(h.valid_loss, pd.read_csv(out/'history.csv').valid_loss, rtol=1e-6)
    assert run['summary']['status'] == 'completed' and run['summary']['fit_time'] > 0
    assert run['config']['model_name'] == 'efficientnet_lite0'

def test_learning_rate_auto_runs_lr_finder(tiny_folder, tmp_path):
    res = train(data=str(tiny_folder), out=str(tmp_path/'auto'), verbose=False, **{**TINY, 'learning_rate': 'auto', 'batch_size': 8})
    assert res.status == 'completed' and (res.out/'lr_find.png').is_file()
    assert 1e-7 < res.metrics['lr_found'] < 10 and res.metrics['learning_rate_used'] == res.metrics['lr_found']
    assert yaml.safe_load((res.out/'config.yaml').read_text())['learning_rate'] == 'auto'

def test_cli_check_data(tiny_folder, tmp_path):
    import shutil
    d = tmp_path/'data'; shutil.copytree(tiny_folder, d)
    (d/'train'/'Bag'/'broken.png').write_bytes(b'not a png')
    r = run_cli('check-data', d)
    assert r.returncode == 0, r.stderr
    assert 'broken.png' in r.stdout + r.stderr and 'Bag' in r.stdout
    r = run_cli('check-data', tmp_path/'missing')
    assert r.returncode == 2 and 'missing' in r.stderr and 'Traceback' not in r.stderr


def test_channels_last_keeps_cpu_in_fp32(tiny_folder, tmp_path):
    "`channels_last` trains in that memory format; on the CPU it adds no autocast (fastai's `to_channelslast` would)."
    seen = {}
    class Probe(Callback):
        def after_pred(self):
            conv = next(m for m in self.model.modules() if isinstance(m, torch.nn.Conv2d))
            seen.setdefault('fmt', conv.weight.is_contiguous(memory_format=torch.channels_last))
    res = train(TrainConfig(data=str(tiny_folder), out=str(tmp_path/'run'), pretrained=False, channels_last=True, **TINY),
                verbose=False, cbs=[Probe()])
    names = [type(c).__name__ for c in res.learn.cbs]
    assert res.metrics['status'] == 'completed' and 'ChannelsLast' in names and 'MixedPrecision' not in names
    assert seen['fmt'] and next(res.learn.model.parameters()).dtype == torch.float32


def test_final_metrics_are_the_best_weights(tiny_folder, tmp_path):
    "metrics.json holds what the saved best weights score on the validation set, with or without a second pass."
    for epochs, lr in ((2, 3e-3), (3, 0.5)):  # lr 0.5: a later epoch is worse, so the best one is reloaded
        res = train(TrainConfig(data=str(tiny_folder), out=str(tmp_path/f'r{epochs}'), pretrained=False,
                                **{**TINY, 'epochs': epochs, 'learning_rate': lr}), verbose=False)
        hist = res.history
        best = hist.valid_loss.idxmin()
        if lr == 0.5: assert best < len(hist) - 1  # the reload path really ran
        vals = res.learn.validate()
        assert res.metrics['valid_loss'] == pytest.approx(float(vals[0]), rel=1e-4)
        assert res.metrics['valid_loss'] == pytest.approx(hist.valid_loss[best], rel=1e-4)
        assert res.metrics['accuracy'] == pytest.approx(hist.accuracy[best], abs=1e-6)


@pytest.mark.parametrize('clean', [True, False])
def test_batchnorm_statistics_are_clean_under_noise(tiny_folder, clean):
    "With Gaussian noise in training batches, `CleanBatchNorm` leaves BatchNorm statistics of clean images for validation."
    from finetune_kit.data import get_dls
    from finetune_kit.learner import timm_learner, CleanBatchNorm
    dls = get_dls(str(tiny_folder), img_size=32, batch_size=8, noise_std=3.0, progress=False)
    learn = timm_learner(dls, 'test_efficientnet', pretrained=False)
    if not clean: learn.remove_cb(CleanBatchNorm)
    for m in learn.model.modules():  # running statistics as plain averages over training, not mostly their initial values
        if isinstance(m, torch.nn.BatchNorm2d): m.momentum = None
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-4)
    bn = next(m for m in learn.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = {}
    hook = bn.register_forward_hook(lambda m, i, o: seen.update(var=i[0].var(dim=(0, 2, 3))))  # returns None: output kept
    xb = next(iter(dls.valid))[0].as_subclass(torch.Tensor)  # clean images, as validation sees them
    with torch.no_grad(): learn.model.eval()(xb)
    hook.remove()
    ratio = float((bn.running_var / seen['var']).median())
    assert (0.5 < ratio < 2) if clean else ratio > 4, ratio


def test_new_head_starts_near_a_uniform_guess(tiny_folder):
    "The fresh classifier starts near zero, so the first loss is about ln(classes), not confidently wrong."
    import math
    from finetune_kit.data import get_dls
    from finetune_kit.learner import timm_learner
    dls = get_dls(str(tiny_folder), img_size=32, batch_size=8, progress=False)
    learn = timm_learner(dls, 'efficientnet_lite0')
    xb, yb = dls.valid.one_batch()
    with torch.no_grad(): loss = float(learn.loss_func(learn.model.eval()(xb.as_subclass(torch.Tensor)), yb))
    assert abs(loss - math.log(3)) < 0.1, loss


def test_channels_last_by_default_on_the_cpu(tiny_folder):
    "`channels_last=None` (the default) means channels_last on the CPU, where it trains faster; False turns it off."
    from finetune_kit.training import build_learner
    names = lambda learn: [type(c).__name__ for c in learn.cbs]
    cfg = TrainConfig(data=str(tiny_folder), pretrained=False, **TINY)
    assert cfg.channels_last is None and 'ChannelsLast' in names(build_learner(cfg, progress=False))
    assert 'ChannelsLast' not in names(build_learner(TrainConfig.from_dict({**vars(cfg), 'channels_last': 'false'}), progress=False))


# ---------------------------------------------------------------- reusing a run folder: resume, extend, refuse, overwrite

class CrashAfter(Callback):
    "Raise once `n` epochs of this fit are logged, as a kill would end the process."
    order = 80  # after RunLog has written the epoch
    def __init__(self, n): self.n = n
    def after_epoch(self):
        if self.epoch + 1 == self.n: raise RuntimeError('killed')

class FirstWeights(Callback):
    "Remember the first parameter of the model when each fit starts."
    def __init__(self): self.seen = []
    def before_fit(self): self.seen.append(next(self.model.parameters()).detach().cpu().clone())

def test_resume_a_finished_run_says_so(tiny_folder, tmp_path):
    "A completed run has nothing to resume: one line naming the run, its status and epochs, and what to do."
    out = tmp_path/'run'
    train(data=str(tiny_folder), out=str(out), verbose=False, pretrained=False, **TINY)
    with pytest.raises(ValueError) as e: train(out=str(out), resume=True, verbose=False)
    msg = str(e.value)
    assert str(out) in msg and 'completed' in msg and '1 epoch' in msg and '--epochs' in msg and '\n' not in msg, msg
    with pytest.raises(ValueError, match='batch_size=8.*saved 16'): train(out=str(out), resume=True, batch_size=8)
    # killed while finishing (all epochs done, no metrics.json yet): resume just finishes it
    (out/'metrics.json').unlink()
    res = train(out=str(out), resume=True, verbose=False)
    assert res.status == 'completed' and json.loads((out/'metrics.json').read_text())['status'] == 'completed'
    assert list(res.history.epoch) == [1] and 0 <= res.metrics['accuracy'] <= 1

def test_resume_with_more_epochs_extends_a_finished_run(tiny_folder, tmp_path):
    "epochs=3 on a finished 1-epoch run: a new one-cycle over 2 more epochs from the last checkpoint, safe to kill."
    out = tmp_path/'run'
    train(data=str(tiny_folder), out=str(out), verbose=False, pretrained=False, **TINY)
    last = torch.load(out/'checkpoint'/'last.pth', weights_only=True)['model']
    probe = FirstWeights()
    with pytest.raises(RuntimeError, match='killed'):
        train(out=str(out), resume=True, epochs=3, verbose=False, cbs=[probe, CrashAfter(1)])
    assert torch.equal(probe.seen[0], next(iter(last.values())))  # continued from the trained weights
    assert not (out/'metrics.json').exists()  # no longer a finished run while it is extended
    assert yaml.safe_load((out/'config.yaml').read_text())['epochs'] == 3
    res = train(out=str(out), resume=True, verbose=False)  # the extension itself resumes after a kill
    assert res.status == 'completed', res.status
    h = pd.read_csv(out/'history.csv')
    assert list(h.epoch) == [1, 2, 3] and list(h.phase) == ['unfrozen', 'extended-1', 'extended-1']
    m = json.loads((out/'metrics.json').read_text())
    assert m['status'] == 'completed' and m['extensions'] == [{'phase': 'extended-1', 'epochs': 2, 'after_epoch': 1}]
    assert (out/'model'/'model.json').is_file()
    with pytest.raises(ValueError, match='3 epochs'): train(out=str(out), resume=True)
    with pytest.raises(ValueError, match='epochs=2.*cannot shorten'): train(out=str(out), resume=True, epochs=2)

def test_fresh_train_refuses_a_used_folder(tiny_folder, tmp_path):
    "A finished or interrupted run, or someone else's files: refused in one line, before the data is read."
    out = tmp_path/'run'
    train(data=str(tiny_folder), out=str(out), verbose=False, pretrained=False, **TINY)
    with pytest.raises(ValueError) as e: train(data='/no/such/folder', out=str(out))
    msg = str(e.value)
    assert str(out) in msg and 'completed' in msg and '--resume' in msg and '--overwrite' in msg and '\n' not in msg, msg
    (tmp_path/'killed').mkdir(); (out/'history.csv').rename(tmp_path/'killed'/'history.csv')
    with pytest.raises(ValueError, match='interrupted'): train(data=str(tiny_folder), out=str(tmp_path/'killed'))
    (tmp_path/'mine').mkdir(); (tmp_path/'mine'/'notes.txt').write_text('mine')
    with pytest.raises(ValueError, match='notes.txt'): train(data=str(tiny_folder), out=str(tmp_path/'mine'))
    with pytest.raises(ValueError, match='resume.*overwrite|overwrite.*resume'): train(out=str(out), resume=True, overwrite=True)

def test_overwrite_replaces_only_the_kits_files(tiny_folder, tmp_path):
    out = tmp_path/'run'
    train(data=str(tiny_folder), out=str(out), verbose=False, pretrained=False, **{**TINY, 'epochs': 2})
    (out/'lr_find.png').write_bytes(b'old'); (out/'notes.txt').write_text('mine')
    res = train(data=str(tiny_folder), out=str(out), overwrite=True, verbose=False, pretrained=False, **TINY)
    assert res.status == 'completed' and list(pd.read_csv(out/'history.csv').epoch) == [1]
    assert not (out/'lr_find.png').exists() and (out/'notes.txt').read_text() == 'mine'

def test_sweep_trial_folder_and_empty_folder_still_train(tiny_folder, tmp_path, monkeypatch):
    "A sweep writes trial.yaml and log.txt into the trial folder before training there: not a reason to refuse."
    from finetune_kit import plots
    figs, plot = [], plots.plot_top_losses
    monkeypatch.setattr(plots, 'plot_top_losses', lambda *a, **kw: figs.append(plot(*a, **kw)) or figs[-1])
    d = tmp_path/'trials'/'0000'; d.mkdir(parents=True)
    (d/'trial.yaml').write_text(yaml.safe_dump(dict(data=str(tiny_folder), pretrained=False, **TINY)))
    (d/'log.txt').write_text('')
    assert train(str(d/'trial.yaml'), out=str(d), verbose=False).status == 'completed'
    assert (d/'trial.yaml').exists() and (d/'log.txt').exists()
    # the top-losses figure says what its titles mean
    assert 'predicted / actual' in figs[0]._suptitle.get_text() and 'loss / probability' in figs[0]._suptitle.get_text()
    (tmp_path/'empty').mkdir()
    assert train(data=str(tiny_folder), out=str(tmp_path/'empty'), verbose=False, pretrained=False, **TINY).status == 'completed'

def test_default_run_folder_is_always_new(tmp_path, monkeypatch):
    "Two runs started in the same second get two folders."
    from finetune_kit.training import run_dir
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, 'strftime', lambda fmt, *a: '20250101-000000')
    a, b = run_dir(TrainConfig()), run_dir(TrainConfig())
    assert a != b and a.parent == b.parent == Path('runs') and a.is_dir() and b.is_dir()


# --- sizes that fit the data and the hardware (issue 14) ---
from finetune_kit import training

@pytest.fixture(scope='session')
def digits01(tmp_path_factory):
    "A real 2-class set of 360 images: scikit-learn's digits 0 and 1 (288 train / 72 valid at valid_pct 0.2)."
    from sklearn.datasets import load_digits
    root, d = tmp_path_factory.mktemp('digits01'), load_digits()
    for i, (x, y) in enumerate(zip(d.images, d.target)):
        if y > 1: continue
        (root/str(y)).mkdir(exist_ok=True)
        Image.fromarray((x * 255 / 16).astype('uint8')).resize((32, 32), Image.NEAREST).save(root/str(y)/f'{i}.png')
    return root

@pytest.fixture(scope='session')
def photos(tmp_path_factory):
    "48 500x375 JPEG photos (crops of scikit-image's real photos) in two class folders."
    from skimage import data as sk
    root = tmp_path_factory.mktemp('photos')
    for cls, imgs in (('cat', [sk.chelsea(), sk.coffee()]), ('space', [sk.astronaut(), sk.rocket()])):
        (root/cls).mkdir()
        for j in range(24):
            im = Image.fromarray(imgs[j % 2]).resize((640, 480))
            im.crop((j * 5, j * 4, j * 5 + 500, j * 4 + 375)).save(root/cls/f'{j}.jpg', quality=90)
    return root

def test_small_data_gets_enough_optimizer_steps(digits01, tmp_path):
    # the old default (batch_size 64) gave 4 steps and about 68% here; 'auto' must leave enough steps to learn it
    r = run_cli('train', '--data', digits01, '--epochs', '1', '--img_size', '32', '--out', tmp_path/'r')
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((tmp_path/'r'/'metrics.json').read_text())
    assert m['batch_size'] <= 16 and m['accuracy'] >= 0.9, (m['batch_size'], m['accuracy'])
    assert 'batch_size' in m['auto_sizes'] and '# batch_size:' in (tmp_path/'r'/'config.yaml').read_text()

def test_explicit_batch_size_is_obeyed_with_a_warning(digits01, tmp_path):
    r = run_cli('train', '--data', digits01, '--epochs', '1', '--img_size', '32', '--batch_size', '64', '--out', tmp_path/'r')
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'finetune-kit: warning: batch_size=64 leaves 4 optimizer steps (288 images x 1 epochs)' in r.stderr, r.stderr
    assert json.loads((tmp_path/'r'/'metrics.json').read_text())['batch_size'] == 64

def test_photos_on_cpu_resolve_by_the_rule_and_record_it(photos):
    cfg, why = training.resolve_sizes(TrainConfig(data=str(photos), epochs=4), progress=False, device='cpu')
    assert (cfg.img_size, cfg.batch_size) == (training.CPU_IMG_SIZE, 8) and set(why) == {'img_size', 'batch_size'}
    assert training.image_side({(500, 375): 12}) == 375

def test_gpu_branch_with_the_device_probe_faked(photos, monkeypatch):
    def fake_step(model_name, img_size, num_classes, device):
        def step(bs):
            if bs * img_size**2 > 96 * 224**2: raise torch.OutOfMemoryError('CUDA out of memory')
        return step
    monkeypatch.setattr(training, '_gpu_step', fake_step)
    many = dict(data=str(photos), epochs=200)  # enough steps that memory, not the schedule, limits the batch
    cfg, why = training.resolve_sizes(TrainConfig(**many), progress=False, device='cuda')
    assert cfg.img_size == 224 and "pretrained size" in why['img_size']  # efficientnet_lite0's size; the photos are larger
    assert cfg.batch_size == 32 and '38 training images' in why['batch_size']  # 64 fit in memory; only 38 images
    cfg, why = training.resolve_sizes(TrainConfig(model_name='vit_small_patch16_384', **many), progress=False, device='cuda')
    assert cfg.img_size == 384 and cfg.batch_size == 32 and 'device limit' in why['batch_size']  # 375-px photos: 384
    assert training.probe_batch_size(fake_step('m', 224, 2, 'cuda')) == 64
    assert training.auto_batch_size(100_000, 5, max_batch=64)[0] == 64 and training.auto_batch_size(288, 1)[0] == 16

def test_bundled_sample_keeps_64():
    cfg, why = training.resolve_sizes(TrainConfig(), progress=False, device='cpu')
    assert (cfg.img_size, cfg.batch_size) == (64, 64)

def test_lr_find_before_train_does_not_block_the_run_folder(tiny_folder, tmp_path):
    # fastai's lr_find leaves an empty `models/` in the learner's folder; a run into that folder must still start
    from finetune_kit.training import build_learner
    cfg = TrainConfig(data=str(tiny_folder), out=str(tmp_path/'r'), **TINY)
    learn = build_learner(cfg, progress=False)
    learn.path = tmp_path/'r'; learn.lr_find(num_it=5, show_plot=False)
    assert (tmp_path/'r'/'models').is_dir() and not any((tmp_path/'r'/'models').iterdir())
    assert train(cfg, verbose=False).status == 'completed'
