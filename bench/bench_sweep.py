"""How many epochs does Hyperband save? Bayes + hyperband versus Bayes without pruning, same number of trials.

All sweeps use the same seed, so TPE starts from the same random proposals; each trial is a real
`finetune-kit train` run (own process) on a slice of the `sample` data (60 training and 30 validation images per
class at 48 px by default, so that a validation loss is not dominated by noise; `--data` takes any dataset instead).
Hyperband runs twice: with W&B's default `strict: true` (a trial is judged by its value at the band) and with
`strict: false` (by its best value so far). Reports epochs spent, the best `valid_loss` of each and their ratios to
the unpruned sweep (goal: at most half the epochs for a best loss within 2 %), and, as a check that needs no
training, what each rule and some other settings (`min_iter`, `eta`) would have done to the unpruned sweep's own
trials, in their order and in 200 shuffled orders (`replay_pruner`); `--report DIR` repeats that for a finished run. Not part of
`make test`: about 13 minutes on 2 CPU cores with the defaults (18 with `--count 24 --arms lenient`).

    python bench/bench_sweep.py [--count 12] [--epochs 9] [--img-size 48] [--model efficientnet_lite0] [--data DIR]
"""
import argparse, json, random, shutil, time
from pathlib import Path
import pandas as pd
from finetune_kit.datasets import sample_subset
from finetune_kit.sweep_pruner import replay_pruner, WandbHyperband, hyperband_bands
from finetune_kit.sweep import sweep

VARIANTS = {'full': None, 'strict': True, 'lenient': False}   # arm -> hyperband's `strict` (None: no pruning)

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

def run(args, arm:str, root:Path):
    "Run one sweep and print its trials"
    t = time.time()
    out = sweep(sweep_dict(args, arm), count=args.count, out=root/arm, seed=args.seed, preflight_check=False)
    r = pd.read_csv(out/'results.csv')
    cols = [c for c in ('number', 'state', 'learning_rate', 'batch_size', 'epochs_run', 'valid_loss', 'accuracy') if c in r]
    print(f'{arm} ({(time.time() - t)/60:.1f} min)'); print(r[cols].to_string(index=False), flush=True)

def _histories(root:Path, full:pd.DataFrame)->list:
    "valid_loss after each epoch of the unpruned sweep's trials, in the order they ran"
    return [pd.read_csv(root/'full'/d/'history.csv').valid_loss.tolist()
            for d in full[full.state == 'COMPLETE'].sort_values('number').trial_dir]

def replay(hist:list, et:dict, orders:int=200)->dict:
    "What the hyperband rule `et` would have done to these trials: in their order, and in `orders` shuffles"
    best, total, rng, runs = min(map(min, hist)), sum(map(len, hist)), random.Random(0), []
    for order in [list(range(len(hist)))] + [rng.sample(range(len(hist)), len(hist)) for _ in range(orders)]:
        hs = [hist[i] for i in order]
        ran = replay_pruner(hs, WandbHyperband(hyperband_bands(et), et['eta'], et['strict']))
        runs.append((sum(ran)/total, min(min(h) for h, n in zip(hs, ran) if n == len(h))/best, ran))
    (e, l, ran), rest = runs[0], runs[1:]
    return dict(epochs_ratio=round(e, 3), best_loss_ratio=round(l, 4), epochs_run=ran,
                shuffled_mean_epochs_ratio=round(sum(r[0] for r in rest)/orders, 3),
                shuffled_best_kept=round(sum(r[1] <= 1.02 for r in rest)/orders, 3),
                shuffled_goal_met=round(sum(r[0] <= 0.5 and r[1] <= 1.02 for r in rest)/orders, 3))

def replay_grid(hist:list)->pd.DataFrame:
    "Replays of other hyperband settings on the same trials, shuffled (no training)"
    rows = [dict(min_iter=m, eta=e, strict=s, **{k: v for k, v in replay(hist, {'min_iter': m, 'eta': e, 'strict': s}).items()
                                                 if k.startswith('shuffled')})
            for m in (1, 2) for e in (2, 3, 4) for s in (True, False)]
    return pd.DataFrame(rows)

def report(root:Path, args)->dict:
    "Ratios of each pruned sweep to the unpruned one in `root`, and the replays"
    res = {arm: pd.read_csv(root/arm/'results.csv') for arm in VARIANTS if (root/arm/'results.csv').exists()}
    summary = [dict(sweep=arm, trials=len(r), completed=int((r.state == 'COMPLETE').sum()), pruned=int((r.state == 'PRUNED').sum()),
                    epochs=int(r.epochs_run.sum()), best_valid_loss=float(r.valid_loss.min())) for arm, r in res.items()]
    full, ratios = summary[0], {}
    for s in summary[1:]:
        r = dict(epochs_ratio=round(s['epochs']/full['epochs'], 3), best_loss_ratio=round(s['best_valid_loss']/full['best_valid_loss'], 4))
        ratios[s['sweep']] = {**r, 'goal_met': r['epochs_ratio'] <= 0.5 and r['best_loss_ratio'] <= 1.02}
    print(pd.DataFrame(summary).to_string(index=False))
    print('ratios to the unpruned sweep:', json.dumps(ratios))
    hist = _histories(root, res['full'])
    rep = {arm: replay(hist, early_terminate(args, VARIANTS[arm])) for arm in ('strict', 'lenient')}
    print('replayed on the unpruned trials:', json.dumps({k: {kk: vv for kk, vv in v.items() if kk != 'epochs_run'} for k, v in rep.items()}))
    grid = replay_grid(hist)
    print('other settings, replayed in 200 shuffled orders:'); print(grid.to_string(index=False))
    return dict(results=summary, ratios=ratios, replay=rep, replay_grid=grid.to_dict('records'))

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--count', type=int, default=12); p.add_argument('--epochs', type=int, default=9)
    p.add_argument('--eta', type=int, default=3); p.add_argument('--min-iter', type=int, default=1)
    p.add_argument('--img-size', type=int, default=48)
    p.add_argument('--model', default='efficientnet_lite0'); p.add_argument('--data', help='default: a slice of sample')
    p.add_argument('--per-class', type=int, nargs=2, default=(60, 30), metavar=('TRAIN', 'VALID'))
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default=str(Path(__file__).parent/'_out'/'sweep'))
    p.add_argument('--arms', nargs='+', choices=list(VARIANTS)[1:], default=list(VARIANTS)[1:], help='hyperband variants to run')
    p.add_argument('--report', metavar='DIR', help='only report on a finished run of this benchmark (no training)')
    args = p.parse_args()
    if args.report:
        root = Path(args.report); args.__dict__.update({k: v for k, v in json.loads((root/'bench_sweep.json').read_text())['args'].items() if k in ('min_iter', 'eta')})
        return report(root, args)
    root = Path(args.out)/time.strftime('%Y%m%d-%H%M%S')
    args.data = args.data or str(sample_subset(root/'data', *args.per_class))
    for arm in ['full', *args.arms]: run(args, arm, root)
    out = report(root, args)
    (root/'bench_sweep.json').write_text(json.dumps(dict(args=vars(args), **out), indent=1))

if __name__ == '__main__': main()
