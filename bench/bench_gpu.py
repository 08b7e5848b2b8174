"""Mixed precision on a CUDA GPU: the kit's default `train()` in fp32 against bf16/fp16 autocast, interleaved in one run.

Reports, per variant, the dtype the model's outputs had inside the training loop (proof that autocast was on),
fit time, images/s, accuracy and peak GPU memory, and the throughput ratio of each variant against fp32.
Runs only where `torch.cuda.is_available()`; CPU training stays fp32 (see `learner.set_precision`).

Usage: python bench/bench_gpu.py [--epochs 5] [--img_size 64] [--reps 1] [--out bench/_out]
"""
import argparse, json, os, tempfile
from pathlib import Path
import torch
os.environ.setdefault('WANDB_MODE', 'offline'); os.environ.setdefault('WANDB_SILENT', 'true'); os.environ.setdefault('MPLBACKEND', 'Agg')
from fastai.callback.core import Callback
from finetune_kit import TrainConfig, train

class PredDtype(Callback):
    "Record the dtype the first convolution computes in on the first training batch (bf16/fp16 under autocast)."
    dtype = device = None
    def before_fit(self):
        conv = next(m for m in self.model.modules() if isinstance(m, torch.nn.Conv2d))
        self.hook = conv.register_forward_hook(self._hook)
    def _hook(self, m, inp, out):
        if self.training and self.dtype is None: self.dtype, self.device = str(out.dtype), str(out.device)
    def after_fit(self): self.hook.remove()

VARIANTS = {'fp32': dict(mixed_precision=False), 'mixed': dict(mixed_precision=True),
            'mixed+channels_last': dict(mixed_precision=True, channels_last=True)}

def run(name, a):
    rec = PredDtype()
    with tempfile.TemporaryDirectory() as d:
        res = train(TrainConfig(epochs=a.epochs, img_size=a.img_size, out=d, **VARIANTS[name]), verbose=False, cbs=[rec])
    m = res.metrics
    return dict(variant=name, conv_dtype=rec.dtype, device=rec.device, fit_time_s=m['fit_time_s'], images_per_s=m['images_per_s'],
                accuracy=m['accuracy'], peak_mem_mb=m['peak_mem_mb'], status=m['status'], gpu=m.get('gpu') or torch.cuda.get_device_name())

def main():
    p = argparse.ArgumentParser(); p.add_argument('--epochs', type=int, default=5); p.add_argument('--img_size', type=int, default=64)
    p.add_argument('--reps', type=int, default=1); p.add_argument('--out', default=str(Path(__file__).parent/'_out'))
    a = p.parse_args()
    if not torch.cuda.is_available(): raise SystemExit('bench_gpu: no CUDA device here; run it on a machine with a GPU')
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, bf16 supported: {torch.cuda.is_bf16_supported()}")
    rows = []
    for r in range(a.reps):
        for name in VARIANTS:
            rows.append(run(name, a)); print(json.dumps(rows[-1]), flush=True)
    base = sorted(x['images_per_s'] for x in rows if x['variant'] == 'fp32')[a.reps // 2]
    for name in VARIANTS:
        ips = sorted(x['images_per_s'] for x in rows if x['variant'] == name)[a.reps // 2]
        print(f"{name:22} {ips:8.0f} img/s  ratio vs fp32 = {ips / base:.2f}")
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    (out/'bench_gpu.json').write_text(json.dumps(dict(args=vars(a), runs=rows), indent=1))

if __name__ == '__main__': main()
