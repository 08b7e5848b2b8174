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
