import os, sys, subprocess, shutil
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
os.environ.setdefault('WANDB_MODE', 'offline')
os.environ.setdefault('WANDB_SILENT', 'true')
os.environ.setdefault('MPLBACKEND', 'Agg')

def run_cli(*args, env=None, timeout=900, cwd=None):
    "Run the `finetune-kit` console script; return the CompletedProcess."
    e = {**os.environ, **(env or {})}
    return subprocess.run([str(BIN/'finetune-kit'), *map(str, args)], capture_output=True, text=True,
                          env=e, timeout=timeout, cwd=cwd)

@pytest.fixture
def cli(): return run_cli

def copy_sample(root:Path, n_train:int, n_valid:int, classes=('Trouser', 'Bag', 'Sneaker')) -> Path:
    "The first `n_train`/`n_valid` real Fashion-MNIST images of `classes` from `sample`, as train/ and valid/ folders."
    from finetune_kit.datasets import sample_subset
    return sample_subset(root, n_train, n_valid, classes)
