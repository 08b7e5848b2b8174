"The greedy soup of a sweep's trials: a valid bundle whose weights are the mean of its kept ingredients'."
import json, shutil
from pathlib import Path
import pytest, torch
from safetensors.torch import load_file
from conftest import copy_sample, run_cli

TINY = dict(model_name='test_efficientnet', pretrained=False, img_size=32, batch_size=8, epochs=2, test_pct=0.25, seed=1, verbose=False)

@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    "A folder of three tiny runs at three learning rates (hand-made sweep trials), sharing data, split and seed."
    from finetune_kit.training import train
    tmp = tmp_path_factory.mktemp('soup')
    data = copy_sample(tmp/'data', 20, 10)
    for i, lr in enumerate((3e-3, 1e-2, 3e-2)): train(dict(data=str(data)), learning_rate=lr, out=str(tmp/'sweep'/'trials'/f'{i:04d}'), **TINY)
    return tmp

def test_average_weights():
    from finetune_kit.soup import average_weights
    a = {'w': torch.tensor([1., 2.]), 'n': torch.tensor(3)}
    b = {'w': torch.tensor([3., 6.]), 'n': torch.tensor(5)}
    avg = average_weights([a, b])
    assert torch.equal(avg['w'], torch.tensor([2., 4.])) and avg['n'].item() == 3

def test_soup_cli_is_a_bundle_of_mean_weights(runs):
    out = runs/'soup'
    r = run_cli('soup', runs/'sweep', '--out', out)
    assert r.returncode == 0, r.stderr
    assert (out/'model.safetensors').exists() and (out/'model.json').exists()
    info = json.loads((out/'soup.json').read_text())
    assert len(info['ingredients']) == 3 and info['kept'][0] == info['best'] and info['metric'] == 'valid_loss'
    assert all(g['test'] is not None for g in info['ingredients']) and info['soup']['test'] is not None
    vals = [g['valid']['valid_loss'] for g in info['ingredients']]
    assert vals == sorted(vals)  # best first
    sds = [load_file(str(runs/'sweep'/t/'model'/'model.safetensors')) for t in info['kept']]
    soup_sd = load_file(str(out/'model.safetensors'))
    for k, v in soup_sd.items():
        if v.is_floating_point(): torch.testing.assert_close(v, torch.stack([sd[k] for sd in sds]).mean(0))
    p = run_cli('predict', '--model-dir', out, runs/'data'/'valid'/'Bag')
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.strip().splitlines()) == 10

def test_soup_forced_mean(runs, monkeypatch):
    "With every trial kept the soup is the mean of all three."
    from finetune_kit import soup as S
    monkeypatch.setattr(S, '_better', lambda a, b, goal: True)
    res = S.soup(runs/'sweep', out=runs/'soup-all')
    assert len(res['kept']) == 3 and res['soup']['n_ingredients'] == 3
    mean = S.average_weights([load_file(str(runs/'sweep'/'trials'/f'{i:04d}'/'model'/'model.safetensors')) for i in range(3)])
    got = load_file(str(runs/'soup-all'/'model.safetensors'))
    for k in got: torch.testing.assert_close(got[k].float(), mean[k].float())

def test_soup_top_and_errors(runs, tmp_path):
    from finetune_kit.soup import soup
    assert len(soup(runs/'sweep', top=1, out=tmp_path/'one')['ingredients']) == 1
    r = run_cli('soup', tmp_path)
    assert r.returncode == 2 and 'no finished trials' in r.stderr and 'Traceback' not in r.stderr
