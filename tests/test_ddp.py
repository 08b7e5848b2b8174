"""Data-parallel fine-tuning: real `torchrun` launches of 2 CPU processes (gloo) on scikit-learn's digits.

Three launches of 2 processes and one in-process run: 66-150 s on 2 shared cores, by their load. Numbers seen there
(test_resnet from scratch, 32 px, 3 epochs, lr 0.01): one process at batch 32: accuracy 0.972, 44 steps per epoch;
two processes at batch 16 each: accuracy 0.964, 44 steps per epoch per rank (one process at batch 16 takes 89);
a killed rank 1: torchrun exits 1 after about 5 s, rank 0 having written status 'failed: ...'.
"""
import json, os, signal, subprocess, sys, time, textwrap
from pathlib import Path
import pandas as pd, pytest, torch
from PIL import Image
from conftest import BIN

pytest.importorskip('accelerate', reason="DDP needs the `ddp` extra: pip install 'finetune-kit[ddp]'")
psutil = pytest.importorskip('psutil')

DIGITS = dict(model_name='test_resnet', pretrained=False, img_size=32, epochs=3, learning_rate=0.01, seed=0)

@pytest.fixture(scope='session')
def digits(tmp_path_factory):
    "scikit-learn's 1797 digits as 32 px PNGs in ten class folders (1438 train / 359 valid at valid_pct 0.2)."
    from sklearn.datasets import load_digits
    root, d = tmp_path_factory.mktemp('digits'), load_digits()
    for i, (x, y) in enumerate(zip(d.images, d.target)):
        (root/str(y)).mkdir(exist_ok=True)
        Image.fromarray((x * 255 / 16).astype('uint8')).resize((32, 32), Image.NEAREST).save(root/str(y)/f'{i}.png')
    return root

def torchrun(*args, cwd=None, **kw):
    "`torchrun --nproc_per_node 2` of `args`, as a Popen with stdout and stderr merged."
    return subprocess.Popen([str(BIN/'torchrun'), '--nproc_per_node', '2', *map(str, args)], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, 'WANDB_MODE': 'offline'}, **kw)

# each rank's optimizer steps (counted by a callback) and final weights, next to (not in) the run folder
DRIVER = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    from fastai.callback.core import Callback
    from finetune_kit.training import train
    class Steps(Callback):
        n = 0
        def after_step(self): self.n += 1
    steps = Steps()
    res = train(json.loads(sys.argv[1]), cbs=[steps])
    weights = sum(float(p.double().sum()) for p in res.learn.model.parameters())
    (Path(sys.argv[2])/f"rank{os.environ.get('RANK', 0)}.json").write_text(json.dumps(dict(steps=steps.n, weights=weights)))
''')

def test_two_processes_train_one_run(digits, tmp_path):
    "2 ranks at batch 16: half the steps of one process at 16, accuracy within 2 points of one process at 32, one run folder."
    from fastai.callback.core import Callback
    from finetune_kit.training import train, build_learner
    from finetune_kit.config import TrainConfig
    class Steps(Callback):
        n = 0
        def after_step(self): self.n += 1
    one, threads = Steps(), torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun gives each rank: two threads on two busy cores made this run 15x slower
    try: res1 = train(data=str(digits), out=str(tmp_path/'one'), verbose=False, batch_size=32, cbs=[one], **DIGITS)
    finally: torch.set_num_threads(threads)
    (tmp_path/'driver.py').write_text(DRIVER)
    cfg = dict(data=str(digits), batch_size=16, tracking='wandb', **DIGITS)  # no `out`: each rank would make its own folder
    p = torchrun(tmp_path/'driver.py', json.dumps(cfg), tmp_path, cwd=tmp_path)
    log, _ = p.communicate(timeout=600)
    assert p.returncode == 0, log[-3000:]
    runs = list((tmp_path/'runs').iterdir())
    assert len(runs) == 1, runs  # only rank 0 makes the run folder
    m = json.loads((runs[0]/'metrics.json').read_text())
    assert m['status'] == 'completed' and m['world_size'] == 2 and res1.metrics['world_size'] == 1
    ranks = [json.loads((tmp_path/f'rank{r}.json').read_text()) for r in (0, 1)]
    alone16 = len(build_learner(TrainConfig(data=str(digits), batch_size=16, **DIGITS), progress=False).dls.train)
    steps = [r['steps'] for r in ranks]
    assert steps[0] == steps[1] == alone16 // 2 * DIGITS['epochs'] == one.n, (steps, alone16, one.n)  # 132 = 44 x 3 epochs
    assert ranks[0]['weights'] == ranks[1]['weights']  # different shards, the same model: DDP averaged the gradients
    assert abs(m['accuracy'] - res1.metrics['accuracy']) <= 0.02, (m['accuracy'], res1.metrics['accuracy'])
    assert m['n_valid'] == 359 and abs(m['accuracy'] * 359 - round(m['accuracy'] * 359)) < 1e-3  # k/359: the whole set
    assert log.count('[unfrozen] epoch 3/3') == 1 and log.count('completed: ') == 1, log[-3000:]  # rank 0 prints
    assert len(list((runs[0]/'wandb').glob('offline-run-*'))) == 1  # one W&B run

def _kill_rank(p, out:Path, rank:int)->tuple[float, str]:
    "SIGKILL `rank` of the torchrun `p` once `out` has its first checkpoint: the seconds until torchrun exits, and its output."
    state = out/'checkpoint'/'state.json'
    t = time.time()
    while not state.exists() and p.poll() is None and time.time() - t < 300: time.sleep(0.2)
    victim = [c for c in psutil.Process(p.pid).children(recursive=True) if c.environ().get('RANK') == str(rank)]
    assert p.poll() is None and victim, 'the run ended before its first checkpoint'
    t = time.time(); victim[0].send_signal(signal.SIGKILL)
    log, _ = p.communicate(timeout=120)
    return time.time() - t, log

def test_a_killed_rank_fails_the_run_and_resume_finishes_it(digits, tmp_path):
    "SIGKILL of rank 1 after the first epoch: the run ends 'failed' within a minute; --resume under torchrun completes it."
    out = tmp_path/'run'
    args = ['--no-python', BIN/'finetune-kit', 'train', '--data', digits, '--out', out, '--batch_size', '16', '--max_items', '480',
            *[f'--{k}={v}' for k, v in {**DIGITS, 'epochs': 4}.items()]]
    p = torchrun(*args)
    took, log = _kill_rank(p, out, 1)
    assert p.returncode != 0 and took < 60, (p.returncode, took)
    assert json.loads((out/'metrics.json').read_text())['status'].startswith('failed: '), log[-3000:]
    assert 'finetune-kit: error: rank 0 of 2: ' in log
    p = torchrun('--no-python', BIN/'finetune-kit', 'train', '--resume', '--out', out)
    log, _ = p.communicate(timeout=600)
    assert p.returncode == 0, log[-3000:]
    h, m = pd.read_csv(out/'history.csv'), json.loads((out/'metrics.json').read_text())
    assert list(h.epoch) == [1, 2, 3, 4] and m['status'] == 'completed' and m['world_size'] == 2
    assert log.count('[unfrozen] epoch 4/4') == 1 and '[unfrozen] epoch 1/4' not in log  # resumed; rank 0 prints

def test_a_bad_input_is_said_once(tmp_path):
    "Every rank refuses a bad --data; the one-line error appears once (rank 0's), not once per process."
    p = torchrun('--no-python', BIN/'finetune-kit', 'train', '--data', tmp_path/'no-such-folder', '--out', tmp_path/'run', cwd=tmp_path)
    out = p.communicate(timeout=300)[0]
    assert p.returncode != 0 and out.count('finetune-kit: error:') == 1 and 'no-such-folder' in out, out[-3000:]
