"""Images/s of the kit's `DataLoaders` against torchvision's `ImageFolder` + `DataLoader` on real JPEG photos.

The photos are made from the real photographs scikit-image ships (astronaut, coffee, chelsea, rocket, ...): random
crops, flips and rescales to 400-600 pixels, saved as JPEG under `bench/_out/loader/` (git-ignored), one class folder
per source photo. Both loaders read the same folder with the same worker count and the same resize (`squish` to
`--img_size`), flip training images at random and normalise; the kit also checks every file first (its data check).

Each measurement runs in a fresh process. `first`: a run that has never seen the data (the kit's image cache and
check cache cleared): from `get_dls` (or building the torchvision loaders) to the end of the first epoch over the
training and validation images. `later`: the epochs after that, in the same process. `next run`: a second run (a new
process, e.g. the next trial of a sweep) on the same data: setup and first epoch, with the kit's disk cache warm.
Kit and torchvision runs alternate (interleaved repetitions), so machine load hits both alike. Ratios are kit
images/s over torchvision images/s in the same repetition, and the tables give medians over repetitions; the last line is `loader ratio FIRST LATER` at the first `--img_size`.

Usage: python bench/bench_loader.py [--n 2000] [--img_size 224 64] [--workers CORES] [--reps 2] [--epochs 3]
"""
import argparse, json, os, shutil, subprocess, sys, time
from pathlib import Path
import numpy as np

OUT = Path(__file__).resolve().parent/'_out'/'loader'
PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'immunohistochemistry', 'hubble_deep_field', 'retina', 'cat')

def cores() -> int: return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1

def make_photos(root:Path, n:int, seed:int=0) -> Path:
    "`n` JPEGs of 400-600 pixels (random crops, flips, rescales of scikit-image's photos), one folder per photo."
    import skimage.data
    from PIL import Image
    if root.exists() and len(list(root.rglob('*.jpg'))) == n: return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(seed)
    srcs = {p: Image.fromarray(getattr(skimage.data, p)()).convert('RGB') for p in PHOTOS}
    for i in range(n):
        name = PHOTOS[i % len(PHOTOS)]; im = srcs[name]
        w, h = im.size; cw, ch = int(w*rng.uniform(0.5, 1)), int(h*rng.uniform(0.5, 1))
        x, y = rng.integers(0, w-cw+1), rng.integers(0, h-ch+1)
        crop = im.crop((x, y, x+cw, y+ch))
        if rng.random() < 0.5: crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        s = rng.uniform(400, 600) / max(cw, ch)
        crop = crop.resize((max(1, round(cw*s)), max(1, round(ch*s))), Image.BICUBIC)
        (root/name).mkdir(parents=True, exist_ok=True)
        crop.save(root/name/f'{i:05d}.jpg', quality=90)
    return root

def epoch(batches) -> int:
    "Images in one pass over `batches` (an iterable of `(x, y)`)."
    return sum(len(x) for x, _ in batches)

def kit_loaders(photos:Path, size:int, bs:int, workers:int) -> list:
    from finetune_kit.data import get_dls
    dls = get_dls(photos, img_size=size, batch_size=bs, num_workers=workers, progress=False, device='cpu')
    return [dls.train, dls.valid]

def tv_loaders(photos:Path, size:int, bs:int, workers:int) -> list:
    import torch
    from torchvision import datasets, transforms as T
    tfm = T.Compose([T.Resize((size, size)), T.RandomHorizontalFlip(), T.ToTensor(),
                     T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = datasets.ImageFolder(str(photos), transform=tfm, allow_empty=True)   # the kit's hidden check cache is no class
    return [torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, num_workers=workers, persistent_workers=workers > 0)]

def child(kind:str, photos:Path, size:int, bs:int, workers:int, epochs:int) -> dict:
    "Images/s of the first epoch (setup included, imports not) and of the later ones, in this fresh process."
    import torchvision.datasets, finetune_kit.data
    t0 = time.perf_counter()
    dls = (kit_loaders if kind == 'kit' else tv_loaders)(photos, size, bs, workers)
    n = sum(epoch(dl) for dl in dls); t1 = time.perf_counter()
    m = sum(epoch(dl) for _ in range(epochs - 1) for dl in dls); t2 = time.perf_counter()
    return dict(first=n / (t1 - t0), later=m / (t2 - t1))

def run_child(kind:str, a, size:int, env:dict) -> dict:
    cmd = [sys.executable, __file__, '--child', kind, '--n', str(a.n), '--img_size', str(size), '--bs', str(a.bs),
           '--workers', str(a.workers), '--epochs', str(a.epochs)]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    if r.returncode: sys.exit(f'{kind} run failed:\n{r.stderr[-3000:]}')
    return json.loads(r.stdout.strip().splitlines()[-1])

def clear_kit_caches(photos:Path, cache:Path):
    "The kit's image cache and its data-check cache, as a run that never saw the data finds them."
    shutil.rmtree(cache/'images', ignore_errors=True); shutil.rmtree(photos/'.finetune_kit', ignore_errors=True)

def main(a):
    photos, cache = make_photos(OUT/f'photos{a.n}', a.n), OUT/'cache'
    env = dict(FINETUNE_KIT_CACHE=str(cache), FINETUNE_KIT_NO_CACHE='')
    rows = []
    for size in a.img_size:
        for rep in range(a.reps):   # interleaved: kit (cold), torchvision, kit (next run, warm disk cache)
            clear_kit_caches(photos, cache)
            kit, tv = run_child('kit', a, size, env), run_child('tv', a, size, env)
            nxt = run_child('kit', a, size, env)
            rows += [dict(img_size=size, rep=rep, measure=m, kit=k, torchvision=t) for m, k, t in
                     (('first epoch', kit['first'], tv['first']), ('later epochs', kit['later'], tv['later']),
                      ('next run, first epoch', nxt['first'], tv['first']))]
    import pandas as pd
    reps = pd.DataFrame(rows).assign(ratio=lambda d: d.kit / d.torchvision)   # ratios within a repetition: same load
    print(reps.round(2).to_string(index=False))
    df = reps.groupby(['img_size', 'measure'], sort=False)[['kit', 'torchvision', 'ratio']].median()
    print(f'{a.n} JPEGs of 400-600 px, {a.workers} workers, batch size {a.bs}, images/s (median of {a.reps} reps)')
    print(df.round(2).to_string())
    s = a.img_size[0]
    print(f"loader ratio {df.loc[(s, 'first epoch'), 'ratio']:.2f} {df.loc[(s, 'later epochs'), 'ratio']:.2f}")

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--n', type=int, default=2000, help='JPEG photos to make and read')
    p.add_argument('--img_size', type=int, nargs='+', default=[224, 64], help='target sizes (the first gives the last line)')
    p.add_argument('--workers', type=int, default=cores(), help='worker processes of both loaders (default: cores)')
    p.add_argument('--bs', type=int, default=64)
    p.add_argument('--reps', type=int, default=2)
    p.add_argument('--epochs', type=int, default=3, help='epochs per measurement: the first, then the later ones')
    p.add_argument('--child', choices=['kit', 'tv'], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.child, make_photos(OUT/f'photos{a.n}', a.n), a.img_size[0], a.bs, a.workers, a.epochs)))
    else: main(a)
