"""How many epochs does Hyperband save? Bayes + hyperband versus Bayes without pruning, same number of trials.

All sweeps use the same seed, so TPE starts from the same random proposals; each trial is a real
`finetune-kit train` run (own process) on a slice of the `sample` data (60 training and 30 validation images per
class at 48 px by default, so that a validation loss is not dominated by noise; `--data` takes any dataset instead).
Hyperband runs twice: with W&B's default `strict: true` (a trial is judged by its value at the band) and with
`strict: false` (by its best value so far). Reports epochs spent, the best `valid_loss` of each and their ratios to
the unpruned sweep (goal: at most half the epochs for a best loss within 2 %), and, as a check that needs no
training, what each rule would have done to the unpruned sweep's own trials (`replay_pruner`). Not part of
`make test`: about 20 minutes on 2 CPU cores with the defaults.

    python bench/bench_sweep.py [--count 12] [--epochs 9] [--img-size 48] [--model efficientnet_lite0] [--data DIR]
"""
import argparse, json, shutil, time
from pathlib import Path
import pandas as pd
from finetune_kit.datasets import sample_path
from finetune_kit.sweep import sweep, replay_pruner, WandbHyperband, hyperband_bands

VARIANTS = {'full': None, 'strict': True, 'lenient': False}   # arm -> hyperband's `strict` (None: no pruning)

def sample_slice(dest:Path, n_train:int, n_valid:int)->Path:
    "The first `n_train`/`n_valid` images per class of `sample`, copied to `dest`"
    for split, n in (('train', n_train), ('valid', n_valid)):
        for cls in sorted((sample_path()/split).iterdir()):
            (dest/split/cls.name).mkdir(parents=True, exist_ok=True)
            for f in sorted(cls.iterdir())[:n]: shutil.copy(f, dest/split/cls.name)
    return dest

def early_terminate(args, strict:bool)->dict: return {'type': 'hyperband', 'min_iter': args.min_iter, 'eta': args.eta, 'strict': strict}

def sweep_dict(args, arm:str)->dict:
    "The benchmark's sweep: learning rate (wide, so some trials are hopeless) and batch size"
    fixed = dict(model_name=args.model, data=args.data, epochs=args.epochs, freeze_epochs=0, img_size=args.img_size,
                 mixed_precision=False, num_workers=0)
    s = {'method': 'bayes', 'name': f'bench-{arm}', 'metric': {'name': 'valid_loss', 'goal': 'minimize'},
         'parameters': {'learning_rate': {'distribution': 'log_uniform_values', 'min': 1e-5, 'max': 0.3},
                        'batch_size': {'values': [16, 32, 64]}, **{k: {'value': v} for k, v in fixed.items()}}}
    if VARIANTS[arm] is not None: s['early_terminate'] = early_terminate(args, VARIANTS[arm])
    return s

def run(args, arm:str, root:Path)->tuple[dict, pd.DataFrame]:
    "Run one sweep; its epochs, best loss and time, and its results table"
    t = time.time()
    out = sweep(sweep_dict(args, arm), count=args.count, out=root/arm, seed=args.seed, preflight_check=False)
    r = pd.read_csv(out/'results.csv')
    cols = [c for c in ('number', 'state', 'learning_rate', 'batch_size', 'epochs_run', 'valid_loss', 'accuracy') if c in r]
    print(arm); print(r[cols].to_string(index=False), flush=True)
    return dict(sweep=arm, trials=len(r), completed=int((r.state == 'COMPLETE').sum()), pruned=int((r.state == 'PRUNED').sum()),
                epochs=int(r.epochs_run.sum()), best_valid_loss=float(r.valid_loss.min()),
                minutes=round((time.time() - t)/60, 1)), r

def replay(args, root:Path, full:pd.DataFrame)->dict:
    "What each hyperband rule would have done to the unpruned sweep's trials, in their order"
    hist = [pd.read_csv(root/'full'/d/'history.csv').valid_loss.tolist() for d in full[full.state == 'COMPLETE'].sort_values('number').trial_dir]
    best, total, res = min(map(min, hist)), sum(map(len, hist)), {}
    for arm in ('strict', 'lenient'):
        et = early_terminate(args, VARIANTS[arm])
        ran = replay_pruner(hist, WandbHyperband(hyperband_bands(et), et['eta'], et['strict']))
        kept = [min(h) for h, n in zip(hist, ran) if n == len(h)]
        res[arm] = dict(epochs_ratio=round(sum(ran)/total, 3), best_loss_ratio=round(min(kept)/best, 4), epochs_run=ran)
    return res

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
    (full, full_r), *pruned = [run(args, arm, root) for arm in VARIANTS]
    ratios = {}
    for res, _ in pruned:
        r = dict(epochs_ratio=round(res['epochs']/full['epochs'], 3), best_loss_ratio=round(res['best_valid_loss']/full['best_valid_loss'], 4))
        ratios[res['sweep']] = {**r, 'goal_met': r['epochs_ratio'] <= 0.5 and r['best_loss_ratio'] <= 1.02}
    print(pd.DataFrame([full] + [r for r, _ in pruned]).to_string(index=False))
    print('ratios to the unpruned sweep:', json.dumps(ratios))
    rep = replay(args, root, full_r)
    print('replayed on the unpruned trials:', json.dumps({k: {kk: vv for kk, vv in v.items() if kk != 'epochs_run'} for k, v in rep.items()}))
    (root/'bench_sweep.json').write_text(json.dumps(dict(args=vars(args), results=[full] + [r for r, _ in pruned],
                                                         ratios=ratios, replay=rep), indent=1))

if __name__ == '__main__': main()
