"""Issue #16: each recipe option (weight EMA, layer-wise LR decay, flip TTA) on and off, 3 seeds, two real datasets.

Datasets, each as train/ valid/ test/ class folders (test never chooses anything):
  sample  the bundled Fashion-MNIST sample: --n_train from train/, --n_valid and then --n_test from valid/ (10 classes)
  digits  scikit-learn's digits (10 classes, 8x8 scaled to 32 px), split by a seeded permutation
Every run: efficientnet_lite0 (pretrained), --img_size, --epochs, batch 32, lr 3e-3, seed s. Per seed and dataset:
  base          the default recipe, with `tta: true` (TTA needs no second training: its figures are this run's test_tta_*)
  ema           base + ema 0.999 (timm's ModelEmaV3 with warm-up)
  layer_decay   base + layer_decay 0.75 (instead of lr_mult's slice)
Rows go to OUT/rows.jsonl as they finish (a rerun skips the done ones); the table is printed at the end.

Usage: python bench/bench_recipe.py [--seeds 0 1 2] [--datasets sample digits] [--epochs 2] [--img_size 32]
                                    [--n_train 500] [--n_valid 200] [--n_test 400] [--out bench/_out/recipe] [--table]
"""
import argparse, json, os, shutil, time
from pathlib import Path
import numpy as np
os.environ.setdefault('WANDB_MODE', 'disabled'); os.environ.setdefault('MPLBACKEND', 'Agg')
from PIL import Image

OPTIONS = {'base': dict(tta=True), 'ema': dict(ema=0.999), 'layer_decay': dict(layer_decay=0.75)}

def sample_split(root:Path, n_train:int, n_valid:int, n_test:int)->Path:
    "`datasets.sample_subset` (first images of each class) plus test/: the next images of the sample's valid/."
    from finetune_kit.datasets import sample_subset, sample_path
    sample_subset(root, n_train // 10, n_valid // 10)
    for c in sorted(p.name for p in (root/'valid').iterdir()):
        (root/'test'/c).mkdir(parents=True, exist_ok=True)
        for f in sorted((sample_path()/'valid'/c).glob('*.png'))[n_valid // 10:(n_valid + n_test) // 10]: shutil.copy(f, root/'test'/c/f.name)
    return root

def digits(root:Path, n_train:int, n_valid:int, n_test:int)->Path:
    "scikit-learn's digits as train/ valid/ test/ class folders (8x8 scaled to 32 px), split by a seeded permutation."
    from sklearn.datasets import load_digits
    d = load_digits()
    idx = np.random.default_rng(0).permutation(len(d.target))
    for split, ids in (('train', idx[:n_train]), ('valid', idx[n_train:n_train + n_valid]), ('test', idx[n_train + n_valid:n_train + n_valid + n_test])):
        for i in ids:
            (root/split/str(d.target[i])).mkdir(parents=True, exist_ok=True)
            Image.fromarray((d.images[i] * 255 / 16).astype('uint8')).resize((32, 32), Image.NEAREST).save(root/split/str(d.target[i])/f'{i}.png')
    return root

DATASETS = {'sample': sample_split, 'digits': digits}

def run(data:Path, option:str, seed:int, a, out:Path)->dict:
    from finetune_kit.training import train
    t0 = time.time()
    r = train(dict(data=str(data), model_name='efficientnet_lite0', img_size=a.img_size, batch_size=32, epochs=a.epochs,
                   learning_rate=3e-3, seed=seed, **OPTIONS[option]), out=str(out), overwrite=True, verbose=False)
    m = r.metrics
    return dict(option=option, seed=seed, status=r.status, test_error=1 - m['test_accuracy'], valid_error=1 - m['accuracy'],
                tta_test_error=1 - m['test_tta_accuracy'] if 'test_tta_accuracy' in m else None,
                fit_time_s=m['fit_time_s'], total_s=time.time() - t0, test_time_s=m.get('test_time_s'), test_tta_time_s=m.get('test_tta_time_s'))

def table(rows:list)->str:
    "Per dataset and option: mean test error and time off/on over seeds, and their ratios (on / off)."
    import pandas as pd
    df, lines = pd.DataFrame(rows), ['| dataset | option | test error off | test error on | error ratio | time off (s) | time on (s) | time ratio | seeds |', '|---|---|---|---|---|---|---|---|---|']
    for ds, g in df.groupby('dataset', sort=False):
        base = g[g.option == 'base']
        for opt in ('tta', 'ema', 'layer_decay'):
            if opt == 'tta': off, on, t_off, t_on, n = base.test_error, base.tta_test_error, base.test_time_s, base.test_tta_time_s, len(base)
            else:
                o = g[g.option == opt]
                if not len(o): continue
                b = base[base.seed.isin(o.seed)]
                off, on, t_off, t_on, n = b.test_error, o.test_error, b.fit_time_s, o.fit_time_s, len(o)
            lines.append(f"| {ds} | {opt} | {off.mean():.4f} ± {off.std():.4f} | {on.mean():.4f} ± {on.std():.4f} | {on.mean() / off.mean():.3f} | "
                         f"{t_off.mean():.1f} | {t_on.mean():.1f} | {t_on.mean() / t_off.mean():.2f} | {n} |")
    return '\n'.join(lines) + '\n(tta time: evaluation of the test set; ema, layer_decay: fit time)'

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2]); p.add_argument('--datasets', nargs='+', default=list(DATASETS))
    p.add_argument('--options', nargs='+', default=list(OPTIONS))
    p.add_argument('--epochs', type=int, default=2); p.add_argument('--img_size', type=int, default=32)
    p.add_argument('--n_train', type=int, default=500); p.add_argument('--n_valid', type=int, default=200); p.add_argument('--n_test', type=int, default=400)
    p.add_argument('--out', default='bench/_out/recipe'); p.add_argument('--table', action='store_true', help='only print the table of OUT/rows.jsonl')
    a = p.parse_args()
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    f = out/'rows.jsonl'
    rows = [json.loads(l) for l in f.read_text().splitlines()] if f.exists() else []
    if not a.table:
        for ds in a.datasets:
            data = out/'data'/ds
            if not data.exists(): DATASETS[ds](data, a.n_train, a.n_valid, a.n_test)
            for seed in a.seeds:
                for opt in a.options:
                    if any(r['dataset'] == ds and r['option'] == opt and r['seed'] == seed for r in rows): continue
                    r = dict(dataset=ds, **run(data, opt, seed, a, out/'runs'/f'{ds}-{opt}-{seed}'))
                    rows.append(r); f.open('a').write(json.dumps(r) + '\n'); print(r, flush=True)
    print(table(rows))

if __name__ == '__main__': main()
