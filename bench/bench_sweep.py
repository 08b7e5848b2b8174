"""How many epochs does Hyperband save? Bayes + hyperband versus Bayes without pruning, same number of trials.

Both sweeps use the same seed, so TPE starts from the same random proposals; each trial is a real
`finetune-kit train` run (own process) on a slice of the `sample` data (60 training and 30 validation images per
class at 48 px by default, so that a validation loss is not dominated by noise; `--data` takes any dataset instead). Reports epochs spent, the best `valid_loss` of each and
their ratios (goal: at most half the epochs for a best loss within 2 %). Not part of `make test`: about 15 minutes
on 2 CPU cores with the defaults.

    python bench/bench_sweep.py [--count 12] [--epochs 9] [--img-size 48] [--model efficientnet_lite0] [--data DIR]
"""
import argparse, json, shutil, time
from pathlib import Path
import pandas as pd
from finetune_kit.datasets import sample_path
from finetune_kit.sweep import sweep

def sample_slice(dest:Path, n_train:int, n_valid:int)->Path:
    "The first `n_train`/`n_valid` images per class of `sample`, copied to `dest`"
    for split, n in (('train', n_train), ('valid', n_valid)):
        for cls in sorted((sample_path()/split).iterdir()):
            (dest/split/cls.name).mkdir(parents=True, exist_ok=True)
            for f in sorted(cls.iterdir())[:n]: shutil.copy(f, dest/split/cls.name)
    return dest

def sweep_dict(args, prune:bool)->dict:
    "The benchmark's sweep: learning rate (wide, so some trials are hopeless) and batch size"
    fixed = dict(model_name=args.model, data=args.data, epochs=args.epochs, freeze_epochs=0, img_size=args.img_size,
                 mixed_precision=False, num_workers=0)
    s = {'method': 'bayes', 'name': 'bench-hyperband' if prune else 'bench-full',
         'metric': {'name': 'valid_loss', 'goal': 'minimize'},
         'parameters': {'learning_rate': {'distribution': 'log_uniform_values', 'min': 1e-5, 'max': 0.3},
                        'batch_size': {'values': [16, 32, 64]}, **{k: {'value': v} for k, v in fixed.items()}}}
    if prune: s['early_terminate'] = {'type': 'hyperband', 'min_iter': args.min_iter, 'eta': args.eta}
    return s

def run(args, prune:bool, root:Path)->dict:
    "Run one sweep; its epochs, best loss and time"
    t = time.time()
    out = sweep(sweep_dict(args, prune), count=args.count, out=root/('hyperband' if prune else 'full'),
                seed=args.seed, preflight_check=False)
    r = pd.read_csv(out/'results.csv')
    cols = [c for c in ('number', 'state', 'learning_rate', 'batch_size', 'epochs_run', 'valid_loss', 'accuracy') if c in r]
    print(r[cols].to_string(index=False), flush=True)
    return dict(sweep='bayes + hyperband' if prune else 'bayes, no pruning', trials=len(r),
                completed=int((r.state == 'COMPLETE').sum()), pruned=int((r.state == 'PRUNED').sum()),
                epochs=int(r.epochs_run.sum()), best_valid_loss=float(r.valid_loss.min()), minutes=round((time.time() - t)/60, 1))

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--count', type=int, default=12); p.add_argument('--epochs', type=int, default=9)
    p.add_argument('--eta', type=int, default=3); p.add_argument('--min-iter', type=int, default=1)
    p.add_argument('--img-size', type=int, default=48)
    p.add_argument('--model', default='efficientnet_lite0'); p.add_argument('--data', help='default: a slice of sample')
    p.add_argument('--per-class', type=int, nargs=2, default=(60, 30), metavar=('TRAIN', 'VALID'))
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default=str(Path(__file__).parent/'_out'/'sweep'))
    args = p.parse_args()
    root = Path(args.out)/time.strftime('%Y%m%d-%H%M%S')
    args.data = args.data or str(sample_slice(root/'data', *args.per_class))
    full, hb = run(args, False, root), run(args, True, root)
    res = pd.DataFrame([full, hb])
    ratio = dict(epochs_ratio=round(hb['epochs']/full['epochs'], 3),
                 best_loss_ratio=round(hb['best_valid_loss']/full['best_valid_loss'], 4))
    ratio['goal_met'] = ratio['epochs_ratio'] <= 0.5 and ratio['best_loss_ratio'] <= 1.02
    print(res.to_string(index=False)); print(ratio)
    (root/'bench_sweep.json').write_text(json.dumps(dict(args=vars(args), results=[full, hb], **ratio), indent=1))

if __name__ == '__main__': main()
