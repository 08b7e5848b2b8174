"""What does forking trials from the pre-imported trainer (the zygote, `finetune_kit.sweep.launch_trial`) save?

The same grid sweep of short real trials runs twice per repetition, alternating: every trial spawned as a new process
(`finetune-kit train`, which imports torch, fastai and timm first) and every trial forked from the zygote. Each trial
fine-tunes a timm test model for one epoch on a slice of the bundled `sample` data, so its start-up is a large part of
it, as in a sweep of quick trials (hyperband's first rung, a learning-rate scan on small data). Reports the sweep's
wall time and the CPU time of its trial processes (zygote included), and the ratios forked / spawned (< 1: forking
saves). The last line is `trial start ratio WALL CPU` (medians over the repetitions).

    python bench/bench_trial_start.py [--count 6] [--reps 2]
"""
import argparse, resource, statistics, tempfile, time
from pathlib import Path
import finetune_kit.sweep as sw
from finetune_kit.datasets import sample_subset

def children_cpu()->float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime

def one(root:Path, data:Path, count:int, forked:bool, tag:str)->tuple[float, float, list]:
    "Run the sweep with every trial forked or spawned: (wall s, CPU s of the trial processes, trial kinds)"
    kinds, launch = [], sw.launch_trial
    def counting(*a, **k):
        p = launch(*a, **k); kinds.append(type(p).__name__); return p
    sw.launch_trial, can = counting, sw.can_fork
    if not forked: sw.can_fork = lambda *a, **k: False
    spec = {'method': 'grid', 'name': f'start-{tag}', 'parameters': {
        'learning_rate': {'values': [1e-3 * 2**i for i in range(count)]},
        **{k: {'value': v} for k, v in dict(data=str(data), model_name='test_resnet', pretrained=False, img_size=32, epochs=1,
                                            freeze_epochs=0, batch_size=16, num_workers=0, mixed_precision=False).items()}}}
    try:
        t, c = time.time(), children_cpu()
        sw.sweep(spec, out=root/tag, preflight_check=False)
        return time.time() - t, children_cpu() - c, kinds
    finally: sw.launch_trial, sw.can_fork = launch, can

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--count', type=int, default=6); ap.add_argument('--reps', type=int, default=2)
    a = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix='bench_trial_start_'))
    data = sample_subset(root/'data', 60, 30)
    one(root, data, 1, False, 'warm-up')   # the data check's and the image caches filled once for both
    ratios = []
    for rep in range(a.reps):
        res = {}
        for forked in ((False, True) if rep % 2 == 0 else (True, False)):
            wall, cpu, kinds = one(root, data, a.count, forked, f"{'forked' if forked else 'spawned'}-{rep}")
            assert set(kinds) == {'ForkedTrial' if forked else 'Popen'}, kinds
            res[forked] = (wall, cpu)
            print(f"rep {rep} {'forked ' if forked else 'spawned'}: {a.count} trials in {wall:6.1f} s, trial processes' CPU {cpu:6.1f} s", flush=True)
        ratios.append((res[True][0] / res[False][0], res[True][1] / res[False][1]))
        print(f"rep {rep} forked / spawned: wall {ratios[-1][0]:.2f}, CPU {ratios[-1][1]:.2f}", flush=True)
    print(f"trial start ratio {statistics.median(r[0] for r in ratios):.2f} {statistics.median(r[1] for r in ratios):.2f}")

if __name__ == '__main__': main()
