"""The measurements behind `img_size: auto` and `batch_size: auto` (issue #14), on this machine's CPU.

1. Enough optimizer steps: a real 2-class set of 360 images (scikit-learn's digits 0 and 1, 288 train / 72 valid),
   one epoch at 32 px, batch sizes 4..64 and 3 seeds: validation accuracy against the number of optimizer steps.
2. CPU image size: training images/s of efficientnet_lite0 at 64..224 px (one warm-up step, then timed steps),
   to choose the largest size at which an epoch of a few thousand images stays within minutes.

Usage: python bench/bench_defaults.py [--steps] [--sizes] [--out bench/_out/defaults]
"""
import argparse, json, os, time, tempfile
from pathlib import Path
import numpy as np
os.environ.setdefault('WANDB_MODE', 'disabled'); os.environ.setdefault('MPLBACKEND', 'Agg')
from PIL import Image

def digits01(root:Path) -> Path:
    "scikit-learn's digits 0 and 1 as PNG class folders (8x8 images scaled to 32 px)."
    from sklearn.datasets import load_digits
    d = load_digits()
    for i, (x, y) in enumerate(zip(d.images, d.target)):
        if y > 1: continue
        (root/str(y)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((x * 255 / 16).astype('uint8')).resize((32, 32), Image.NEAREST).save(root/str(y)/f'{i}.png')
    return root

def steps(out:Path, seeds=(0, 1, 2), sizes=(4, 8, 16, 32, 64)):
    from finetune_kit.training import train
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = digits01(Path(tmp)/'digits01')
        for bs in sizes:
            for seed in seeds:
                r = train(data=str(data), img_size=32, batch_size=bs, epochs=1, seed=seed, out=f'{tmp}/r{bs}-{seed}', verbose=False)
                n = r.metrics['n_train']
                rows.append(dict(batch_size=bs, seed=seed, steps=n // bs, accuracy=r.metrics['accuracy']))  # fastai drops the last partial batch
                print(rows[-1], flush=True)
    return rows

def sizes(out:Path, sizes=(64, 96, 128, 160, 224), bs=32, n=6):
    import torch, timm
    m = timm.create_model('efficientnet_lite0', num_classes=10).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(m.parameters(), 1e-3)
    rows = []
    for s in sizes:
        x = torch.randn(bs, 3, s, s).to(memory_format=torch.channels_last); y = torch.randint(0, 10, (bs,))
        def step():
            opt.zero_grad(); torch.nn.functional.cross_entropy(m(x), y).backward(); opt.step()
        step(); t = time.perf_counter()
        for _ in range(n): step()
        ips = bs * n / (time.perf_counter() - t)
        rows.append(dict(img_size=s, images_per_s=round(ips, 1), epoch_s_5000=round(5000 / ips, 1)))
        print(rows[-1], flush=True)
    return rows

if __name__ == '__main__':
    p = argparse.ArgumentParser(); p.add_argument('--steps', action='store_true'); p.add_argument('--sizes', action='store_true')
    p.add_argument('--out', default='bench/_out/defaults')
    a = p.parse_args(); out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    res = {}
    if a.sizes or not a.steps: res['sizes'] = sizes(out)
    if a.steps or not a.sizes: res['steps'] = steps(out)
    (out/'results.json').write_text(json.dumps(res, indent=1))
