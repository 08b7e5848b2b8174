"""The kit's whole `train()` against a plain PyTorch loop on the same model, data loader and batch size.

For each model the plain loop gets the kit's own DataLoaders (same images, resize, batch size and device) and trains
the same timm architecture (random weights: speed does not depend on them) with AdamW and one-cycle, bf16 autocast on a
GPU (fp32 on a CPU, as the kit), channels_last, and one validation pass per epoch. The kit's run adds its data check,
metrics, checkpoints, history, plots and bundle. Runs alternate (plain, kit, plain, kit, ...) so machine load hits
both alike; reported per model: images/s of each (training images seen / wall time of the fit, validation included),
peak memory, and the ratio kit/plain (goal: >= 0.9).

  python bench/bench_gpu.py                 # a GPU: convnext_tiny, resnet50, efficientnet_b0, vit_small_patch16_224 at 224 px
  python bench/bench_gpu.py --small         # any machine (CPU here): one small model, a few hundred images, 32 px

Earlier mixed-precision variants of this script (fp32 vs bf16 vs channels_last) are in git history (stop 8).
"""
import argparse, json, math, os, tempfile, time
from pathlib import Path
import torch, torch.nn.functional as F
os.environ.setdefault('WANDB_MODE', 'disabled'); os.environ.setdefault('MPLBACKEND', 'Agg')
from finetune_kit.config import TrainConfig
from finetune_kit.training import train
from finetune_kit.data import get_dls
from finetune_kit.models import create_model
from finetune_kit.datasets import sample_subset

GPU_MODELS = ('convnext_tiny', 'resnet50', 'efficientnet_b0', 'vit_small_patch16_224')

def _peak_mb(device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == 'cuda' else float('nan')

def plain(model_name:str, dls, epochs:int, lr:float) -> dict:
    "A bare training loop over the kit's DataLoaders: AdamW, one-cycle, autocast on a GPU, one validation per epoch."
    dev = dls.device or torch.device('cpu')
    if dev.type == 'cuda': torch.cuda.reset_peak_memory_stats(dev)
    model = create_model(model_name, num_classes=dls.c, pretrained=False).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * len(dls.train), pct_start=0.25)
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == 'cuda')
    seen, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        model.train()
        for xb, yb in dls.train:
            with torch.autocast(**amp): loss = F.cross_entropy(model(xb.as_subclass(torch.Tensor).contiguous(memory_format=torch.channels_last)), yb)
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); sched.step(); seen += len(xb)
        model.eval()
        with torch.no_grad(), torch.autocast(**amp): correct = sum(int((model(xb.as_subclass(torch.Tensor)).argmax(1) == yb).sum()) for xb, yb in dls.valid)
    if dev.type == 'cuda': torch.cuda.synchronize(dev)
    dt = time.perf_counter() - t0
    return dict(images_per_s=seen / dt, peak_mem_mb=_peak_mb(dev), accuracy=correct / len(dls.valid_ds))

def kit(model_name:str, data:str, img_size:int, bs:int, epochs:int, lr:float, max_items) -> dict:
    "The kit's whole `train()` on the same data: its own `images_per_s` (training images seen / fit time) and peak memory."
    with tempfile.TemporaryDirectory() as d:
        m = train(TrainConfig(model_name=model_name, pretrained=False, data=data, img_size=img_size, batch_size=bs, epochs=epochs,
                              learning_rate=lr, max_items=max_items, out=f'{d}/run'), verbose=False).metrics
    return dict(images_per_s=m['images_per_s'], peak_mem_mb=m['peak_mem_mb'], accuracy=m.get('accuracy'))

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--small', action='store_true', help='a CPU-sized run: efficientnet_lite0, 32 px, a few hundred images')
    p.add_argument('--models', nargs='*'); p.add_argument('--img_size', type=int); p.add_argument('--bs', type=int)
    p.add_argument('--epochs', type=int); p.add_argument('--reps', type=int, default=1); p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--out', default=str(Path(__file__).parent/'_out'))
    a = p.parse_args(argv)
    small = a.small or not torch.cuda.is_available()
    models = a.models or (['efficientnet_lite0'] if small else list(GPU_MODELS))
    img_size, bs, epochs = a.img_size or (32 if small else 224), a.bs or (16 if small else 128), a.epochs or (1 if small else 2)
    with tempfile.TemporaryDirectory() as tmp:
        data = str(sample_subset(Path(tmp)/'data', 12, 3) if small else 'sample')
        max_items = None if small else 4000
        dls = get_dls(data, img_size=img_size, batch_size=bs, max_items=max_items, progress=False)
        print(f"torch {torch.__version__}, device {dls.device or 'cpu'}, {len(dls.train_ds)} train images at {img_size} px, batch {bs}, {epochs} epochs", flush=True)
        rows = []
        for m in models:
            for r in range(a.reps):
                rows.append(dict(model=m, rep=r, loop='plain', **plain(m, dls, epochs, a.lr)))
                rows.append(dict(model=m, rep=r, loop='kit', **kit(m, data, img_size, bs, epochs, a.lr, max_items)))
                print(json.dumps(rows[-2]), json.dumps(rows[-1]), flush=True)
    print(f"\n{'model':24} {'plain img/s':>12} {'kit img/s':>10} {'kit/plain':>10} {'plain MB':>9} {'kit MB':>8}")
    ratios = []
    for m in models:
        med = lambda loop, k: sorted(x[k] for x in rows if x['model'] == m and x['loop'] == loop)[a.reps // 2]
        ratio = med('kit', 'images_per_s') / med('plain', 'images_per_s'); ratios.append(ratio)
        print(f"{m:24} {med('plain', 'images_per_s'):12.0f} {med('kit', 'images_per_s'):10.0f} {ratio:10.2f} "
              f"{med('plain', 'peak_mem_mb'):9.0f} {med('kit', 'peak_mem_mb'):8.0f}")
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    (out/'bench_gpu.json').write_text(json.dumps(dict(args=vars(a), runs=rows), indent=1, default=str))
    print(f"kit/plain min {min(ratios):.2f}")
    return rows

if __name__ == '__main__': main()
