"""Overhead of the kit's whole `train()` against a plain PyTorch loop on the same images.

The plain loop gets the images already decoded, resized and normalised in memory tensors, and trains the same timm
model (efficientnet_lite0 with the same offline weights) with the same optimizer family (AdamW), one-cycle schedule,
batch size, epochs and per-epoch validation. The kit's run reads PNG files through its loader and data check,
augments, computes metrics, checkpoints every epoch and (second variant) tracks to W&B offline. Runs are interleaved
(plain, kit, kit+wandb, plain, ...) so machine load hits all alike. Reported: ratio of throughputs (kit / plain) and
the share of the kit's wall time spent in each part.

Usage: python bench/bench_train.py [--items 2000] [--epochs 2] [--img_size 64] [--reps 2]
"""
import argparse, os, time, json, tempfile
from pathlib import Path
import numpy as np, torch, torch.nn.functional as F
os.environ.setdefault('WANDB_MODE', 'offline'); os.environ.setdefault('WANDB_SILENT', 'true')
os.environ.setdefault('MPLBACKEND', 'Agg')
from PIL import Image
from finetune_kit import TrainConfig, train, create_model, sample_path
from finetune_kit.learner import init_head

def load_tensors(items:int, img_size:int, seed:int=42):
    "The sample's images decoded and resized once, as normalised tensors (the plain loop's head start)."
    root, classes = sample_path(), sorted(p.name for p in (sample_path()/'train').iterdir())
    def read(split, n=None):
        fs = [(f, i) for i, c in enumerate(classes) for f in sorted((root/split/c).glob('*.png'))]
        if n: fs = [fs[j] for j in np.random.default_rng(seed).permutation(len(fs))[:n]]
        x = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert('RGB').resize((img_size, img_size), Image.BILINEAR)))
                         for f, _ in fs]).permute(0, 3, 1, 2).float().div(255)
        return (x - 0.5) / 0.5, torch.tensor([i for _, i in fs])
    return read('train', items), read('valid'), len(classes)

def plain_loop(data, n_classes, epochs, bs, lr):
    (xt, yt), (xv, yv) = data
    m = init_head(create_model('efficientnet_lite0', num_classes=n_classes))  # the kit's head init, for like accuracy
    opt = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * (len(xt) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.25)
    t0 = time.perf_counter()
    for _ in range(epochs):
        m.train(); perm = torch.randperm(len(xt))
        for i in range(0, len(xt) - bs + 1, bs):
            b = perm[i:i+bs]
            loss = F.cross_entropy(m(xt[b]), yt[b]); opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        m.eval()
        with torch.no_grad(): acc = torch.cat([m(xv[i:i+256]).argmax(1) for i in range(0, len(xv), 256)]).eq(yv).float().mean()
    return time.perf_counter() - t0, float(acc)

def kit_run(items, epochs, img_size, bs, lr, tracking):
    "Whole `train()` wall time, split into setup (data check, loading, model), fit, finish (eval, plots, bundle), other."
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        res = train(TrainConfig(max_items=items, epochs=epochs, img_size=img_size, batch_size=bs, learning_rate=lr,
                                tracking=tracking, out=d), verbose=False)
        total = time.perf_counter() - t0
    m = res.metrics
    parts = dict(setup=m['setup_time_s'], fit=m['fit_time_s'], finish=m['finish_time_s'])
    parts['other'] = total - sum(parts.values())  # run folder, tracking start/finish, LR pick
    return total, m['accuracy'], parts

def main():
    p = argparse.ArgumentParser(); p.add_argument('--items', type=int, default=2000); p.add_argument('--epochs', type=int, default=2)
    p.add_argument('--img_size', type=int, default=64); p.add_argument('--reps', type=int, default=2)
    p.add_argument('--bs', type=int, default=64); p.add_argument('--lr', type=float, default=3e-3)
    a = p.parse_args()
    data, n_classes = load_tensors(a.items, a.img_size)[:2], load_tensors(1, a.img_size)[2]
    res = {'plain': [], 'kit': [], 'kit+wandb': []}
    for r in range(a.reps):
        res['plain'].append(plain_loop(data, n_classes, a.epochs, a.bs, a.lr) + ({},))
        res['kit'].append(kit_run(a.items, a.epochs, a.img_size, a.bs, a.lr, 'none'))
        res['kit+wandb'].append(kit_run(a.items, a.epochs, a.img_size, a.bs, a.lr, 'wandb'))
        print(f"rep {r}: " + ', '.join(f"{k} {v[-1][0]:.1f}s acc {v[-1][1]:.3f}" for k, v in res.items()), flush=True)
    med = {k: float(np.median([t for t, _, _ in v])) for k, v in res.items()}
    print(f"\nitems={a.items} epochs={a.epochs} img_size={a.img_size} bs={a.bs} reps={a.reps} (median wall seconds)")
    for k in ('kit', 'kit+wandb'):
        parts = {n: float(np.median([p[n] for _, _, p in res[k]])) for n in res[k][0][2]}
        share = ', '.join(f"{n} {v / med[k]:.0%}" for n, v in parts.items())
        print(f"{k:10} {med[k]:7.1f}s  throughput ratio vs plain = {med['plain'] / med[k]:.2f}   ({share})")
    print(f"{'plain':10} {med['plain']:7.1f}s  (baseline: in-memory tensors, bare loop)")
    out = Path(__file__).parent/'_out'; out.mkdir(exist_ok=True)
    (out/'bench_train.json').write_text(json.dumps(dict(args=vars(a), median_s=med, runs={k: [(t, acc, p) for t, acc, p in v] for k, v in res.items()}), indent=1))

if __name__ == '__main__': main()
