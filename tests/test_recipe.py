"The recipe options: test split, flip TTA, weight EMA (and resuming it), layer-wise LR decay; predict --tta."
import json, shutil
from pathlib import Path
import numpy as np, pytest, torch
from fastai.callback.core import Callback
from safetensors.torch import load_file
from conftest import copy_sample, run_cli

TINY = dict(model_name='test_efficientnet', pretrained=False, img_size=32, batch_size=8, verbose=False)

@pytest.fixture(scope='module')
def data(tmp_path_factory):
    "train/ valid/ and a test/ folder of the sample's images."
    root = copy_sample(tmp_path_factory.mktemp('recipe')/'data', 16, 8)
    for c in ('Trouser', 'Bag', 'Sneaker'):
        (root/'test'/c).mkdir(parents=True)
        for f in sorted((root/'valid'/c).glob('*.png'))[:4]: shutil.move(f, root/'test'/c/f.name)
    return root

class GroupLrs(Callback):
    "Record each parameter group's lr at the first unfrozen step."
    lrs, order = None, 100  # after the ParamScheduler has set this step's rates
    def before_batch(self):
        if self.training and self.lrs is None and len(self.opt.hypers) > 1: GroupLrs.lrs = [h['lr'] for h in self.opt.hypers]

def test_options_on(data, tmp_path):
    from finetune_kit.training import train
    r = train(dict(data=str(data)), epochs=2, tta=True, ema=0.9, layer_decay=0.5, out=str(tmp_path/'run'), cbs=[GroupLrs()], **TINY)
    m = r.metrics
    assert r.status == 'completed' and m['n_test'] == 12 and m['n_valid'] == 12
    for k in ('accuracy', 'tta_accuracy', 'test_accuracy', 'test_tta_accuracy', 'test_loss', 'tta_loss', 'test_tta_time_s'): assert k in m, k
    lrs = np.array(GroupLrs.lrs)
    np.testing.assert_allclose(lrs[:-1] / lrs[1:], 0.5, rtol=1e-6)  # each group half the next; the head the largest
    ck = torch.load(tmp_path/'run'/'checkpoint'/'last.pth', weights_only=True)
    assert ck['ema']['step'] == 2 * len(r.learn.dls.train)
    best = load_file(str(tmp_path/'run'/'model'/'model.safetensors'))
    k = next(k for k in best if 'conv_stem' in k)
    assert torch.equal(best[k], ck['ema']['weights'][k].cpu())  # the bundle holds EMA weights (the last epoch was the best here or not: it is EMA)
    assert not torch.equal(ck['ema']['weights'][k], ck['model'][k])

def test_ema_resumes(data, tmp_path):
    "Extending a run with --resume continues its weight average (step count and weights) rather than restarting it."
    from finetune_kit.training import train
    out = str(tmp_path/'run')
    r1 = train(dict(data=str(data)), epochs=1, ema=0.9, out=out, **TINY)
    n = len(r1.learn.dls.train)
    w1 = torch.load(Path(out)/'checkpoint'/'last.pth', weights_only=True)['ema']
    assert w1['step'] == n
    train(dict(data=str(data)), epochs=2, ema=0.9, out=out, resume=True, **TINY)
    w2 = torch.load(Path(out)/'checkpoint'/'last.pth', weights_only=True)['ema']
    assert w2['step'] == 2 * n

def test_off_by_default_and_test_pct(data, tmp_path):
    from finetune_kit.training import train
    r = train(dict(data=str(data)), epochs=1, out=str(tmp_path/'run'), **TINY)
    assert not any(k.startswith('tta_') for k in r.metrics) and r.metrics['n_test'] == 12  # the test/ folder
    assert 'ema' not in torch.load(tmp_path/'run'/'checkpoint'/'last.pth', weights_only=True)
    plain = copy_sample(tmp_path/'plain', 16, 8)
    r = train(dict(data=str(plain)), epochs=1, test_pct=0.25, out=str(tmp_path/'run2'), **TINY)
    assert r.metrics['n_test'] == 18 and r.metrics['n_train'] + r.metrics['n_valid'] == 54

def test_predict_tta_cli(data, tmp_path):
    from finetune_kit.training import train
    train(dict(data=str(data)), epochs=1, out=str(tmp_path/'run'), **TINY)
    imgs = data/'test'/'Bag'
    plain, tta = (run_cli('predict', '--model-dir', tmp_path/'run'/'model', imgs, *a) for a in ((), ('--tta',)))
    assert plain.returncode == 0 and tta.returncode == 0, tta.stderr
    p, t = ([json.loads(l) for l in r.stdout.splitlines()] for r in (plain, tta))
    assert len(t) == 4 and [r['path'] for r in p] == [r['path'] for r in t]
    assert any(a['probability'] != b['probability'] for a, b in zip(p, t))

def test_bad_values():
    from finetune_kit.config import TrainConfig
    for bad, msg in ((dict(ema=1), 'ema=1'), (dict(layer_decay=0), 'layer_decay=0'), (dict(test_pct=0.85), 'test_pct=0.85')):
        with pytest.raises(ValueError, match=msg): TrainConfig.from_dict(bad)
