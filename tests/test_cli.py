"The `finetune-kit` console script: dispatch, help, one-line errors, analyze."
from pathlib import Path
from conftest import run_cli, ROOT

def test_help_lists_commands():
    r = run_cli('--help')
    assert r.returncode == 0
    for c in ('train', 'predict', 'check-data', 'weights', 'sweep', 'analyze'): assert c in r.stdout

def test_unknown_command_one_line():
    r = run_cli('fly')
    assert r.returncode == 2 and "unknown command 'fly'" in r.stderr and len(r.stderr.strip().splitlines()) == 1

def test_unknown_flag_suggests_the_key():
    r = run_cli('train', '--learnin_rate', '0.1')
    assert r.returncode == 2 and 'did you mean --learning_rate' in r.stderr and 'Traceback' not in r.stderr

def test_analyze_writes_report(tmp_path):
    r = run_cli('analyze', ROOT/'tests'/'fixtures'/'analysis'/'sweep', '--out', tmp_path/'a')
    assert r.returncode == 0, r.stderr
    for f in ('summary.csv', 'report.html', 'best_config.yaml'): assert (tmp_path/'a'/f).is_file()
    r = run_cli('train', '--config', tmp_path/'a'/'best_config.yaml', '--epochs', '0', '--freeze_epochs', '0')
    assert r.returncode == 2 and 'at least one epoch' in r.stderr  # the best config is a valid train config

def test_analyze_missing_source(tmp_path):
    r = run_cli('analyze', tmp_path/'nothing')
    assert r.returncode == 2 and 'nothing' in r.stderr and 'Traceback' not in r.stderr

# --- flags a user types: aliases, no prefix matching, --version, fast help (issue 11) ---
import json, shutil, subprocess, sys
import pytest

def test_lr_alias_is_learning_rate_not_a_prefix_of_lr_mult(tmp_path):
    # argparse's prefix matching used to turn --lr into --lr_mult; now --lr is learning_rate, and its range is checked
    r = run_cli('train', '--lr', '20', '--data', tmp_path/'none')
    assert r.returncode == 2 and 'learning_rate=20.0 must be in (0, 10)' in r.stderr, r.stderr
    r = run_cli('train', '--lr_m', '2')
    assert r.returncode == 2 and 'unrecognized arguments: --lr_m' in r.stderr

def test_bs_and_arch_aliases_and_the_help_says_so():
    from finetune_kit.cli import train_parser, unalias
    a = train_parser().parse_args(unalias(['--bs=16', '--arch', 'resnet18', '--learning_rate', '1e-3']))
    assert vars(a) == {'batch_size': '16', 'model_name': 'resnet18', 'learning_rate': '1e-3'}
    h = ' '.join(run_cli('train', '--help').stdout.split())  # argparse wraps lines
    assert h.count('--lr = --learning_rate') == 1 and 'one of: avg, concat, max' in h and "'auto'" in h

def test_version():
    from finetune_kit import __version__
    r = run_cli('--version')
    assert r.returncode == 0 and r.stdout.strip() == f'finetune-kit {__version__}'

def test_help_and_flag_errors_do_not_import_torch(tmp_path):
    "--help, a mistyped flag, a bad value, a missing data path or config file: said before torch is imported"
    code = ("import sys\nfrom finetune_kit.cli import main\n"
            "try: main(['train', '--help'])\nexcept SystemExit: pass\n"
            "main(['--help']); main(['train', '--bz', '3'])\n"
            f"codes = [main(['train', '--data', {str(tmp_path/'none')!r}]), main(['train', '--config', {str(tmp_path/'c.yaml')!r}]),\n"
            "         main(['train', '--epochs', '0', '--freeze_epochs', '0'])]\n"
            "print('LOADED', [m for m in ('torch', 'fastai', 'timm') if m in sys.modules], codes)")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert 'LOADED [] [2, 2, 2]' in r.stdout, r.stdout[-500:] + r.stderr[-500:]
    assert 'did you mean --bs' in r.stderr or 'did you mean --batch_size' in r.stderr
    assert "none' is neither a dataset name" in r.stderr and "c.yaml' not found" in r.stderr and 'need at least one epoch' in r.stderr

def test_check_data_flags_come_from_its_signature():
    h = run_cli('check-data', '--help').stdout
    for flag in ('--valid_pct', '--task', '--path_col', '--label_col', '--seed'): assert flag in h
    assert 'default: 0.2' in h

def test_unknown_command_suggests_one():
    r = run_cli('predcit')
    assert r.returncode == 2 and 'did you mean predict' in r.stderr

def test_jupyter_kernel_is_relocatable():
    k = Path(sys.prefix)/'share'/'jupyter'/'kernels'/'python3'/'kernel.json'
    if not k.exists(): pytest.skip('no kernel installed in this environment (make test installs one)')
    assert json.loads(k.read_text())['argv'][0] == 'python'  # Jupyter substitutes its own interpreter

@pytest.fixture(scope='module')
def bundle(tmp_path_factory):
    from conftest import copy_sample
    d = tmp_path_factory.mktemp('cli')
    data = copy_sample(d/'data', 8, 4)
    r = run_cli('train', '--data', data, '--out', d/'run', '--img_size=32', '--batch_size=8', '--epochs=1')
    assert r.returncode == 0, r.stderr[-2000:]
    return d/'run'/'model', data

def test_predict_skips_unreadable_images(bundle, tmp_path):
    model, data = bundle
    imgs = tmp_path/'imgs'; imgs.mkdir()
    good = sorted((data/'valid'/'Bag').glob('*.png'))[:2]
    for f in good: shutil.copy(f, imgs/f.name)
    (imgs/'notes.jpg').write_text('not an image')
    (imgs/'half.png').write_bytes(good[0].read_bytes()[:len(good[0].read_bytes()) // 2])
    r = run_cli('predict', '--model-dir', model, imgs)
    rows = [json.loads(l) for l in r.stdout.splitlines()]
    assert r.returncode == 0 and sorted(Path(x['path']).name for x in rows) == sorted(f.name for f in good), r.stderr
    assert 'notes.jpg' in r.stderr and 'half.png' in r.stderr and 'Traceback' not in r.stderr
    r = run_cli('predict', '--model-dir', model, imgs/'notes.jpg')
    assert r.returncode != 0 and 'none of the 1 images could be read' in r.stderr

def test_warnings_are_one_line(bundle, tmp_path):
    # a data check that leaves a file out warns; the CLI shows it as one line, not Python's file:line + source line
    _, data = bundle
    d = tmp_path/'d'; shutil.copytree(data, d)
    (d/'train'/'Bag'/'broken.png').write_text('not an image')
    r = run_cli('check-data', d)
    assert r.returncode == 0 and r.stderr.startswith('finetune-kit: warning: 1 file(s) left out'), r.stderr
    assert 'UserWarning' not in r.stderr and 'sys.exit' not in r.stderr
