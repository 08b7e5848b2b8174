"End-to-end training: config sources, CLI errors, run folder, bundle predictions, NaN, kill-and-resume, W&B offline."
import os, sys, json, time, signal, subprocess
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch, yaml
from PIL import Image
from finetune_kit.train import TrainConfig, train, predict, load_bundle
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
    from finetune_kit.train import build_learner
    names = lambda learn: [type(c).__name__ for c in learn.cbs]
    cfg = TrainConfig(data=str(tiny_folder), pretrained=False, **TINY)
    assert cfg.channels_last is None and 'ChannelsLast' in names(build_learner(cfg, progress=False))
    assert 'ChannelsLast' not in names(build_learner(TrainConfig.from_dict({**vars(cfg), 'channels_last': 'false'}), progress=False))
