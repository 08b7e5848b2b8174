"Tests of finetune_kit.transforms: resize methods, augmentation presets, Gaussian noise, normalisation, get_tfms."
import numpy as np, pytest, torch
from fastai.vision.augment import ResizeMethod, Resize
from fastai.data.transforms import Normalize, IntToFloatTensor
from fastai.torch_core import TensorImage
from fastai.vision.core import PILImage, imagenet_stats
from fasttransform import Pipeline
from PIL import Image
from finetune_kit.transforms import (RESIZE_METHODS, AUG_PRESETS, resize_tfm, RandomFlip, AddGaussianNoise, normalize_tfm, get_tfms)

@pytest.mark.parametrize('name,method,size', [('crop', ResizeMethod.Crop, (32, 32)), ('squish', ResizeMethod.Squish, (32, 32)), ('pad', ResizeMethod.Pad, (32, 32))])
def test_resize_methods(name, method, size):
    t = resize_tfm(32, name)
    assert isinstance(t, Resize) and t.method == method
    im = PILImage.create(Image.new('RGB', (60, 20), (255, 0, 0)))
    assert t(im, split_idx=1).size == size

def test_pad_pads_with_zeros():
    im = PILImage.create(Image.new('RGB', (40, 20), (255, 255, 255)))
    out = np.asarray(resize_tfm(40, 'pad')(im, split_idx=1))
    assert out[0, 0].tolist() == [0, 0, 0] and out[20, 20].tolist() == [255, 255, 255]

def test_bad_choices():
    with pytest.raises(ValueError, match="resize_method='fill'.*'crop', 'squish', 'pad'"): resize_tfm(64, 'fill')
    with pytest.raises(ValueError, match="aug='strong'.*'none', 'flip', 'fastai'"): get_tfms(aug='strong')
    with pytest.raises(ValueError, match='noise_std'): get_tfms(noise_std=-0.1)

def test_aug_presets():
    assert AUG_PRESETS['none']() == []
    assert [type(t) for t in AUG_PRESETS['flip']()] == [RandomFlip]
    assert len(AUG_PRESETS['fastai']()) >= 2

def test_random_flip():
    x = TensorImage(torch.randint(0, 255, (8, 3, 4, 5), dtype=torch.uint8))
    assert torch.equal(RandomFlip(1.)(x, split_idx=0), x.flip(-1))
    assert torch.equal(RandomFlip(0.)(x, split_idx=0), x)
    assert torch.equal(RandomFlip(1.)(x, split_idx=1), x)      # never on validation batches
    y = RandomFlip(0.5)(x, split_idx=0)
    assert all(torch.equal(a, b) or torch.equal(a, b.flip(-1)) for a, b in zip(y, x))

def test_noise_train_only():
    x = TensorImage(torch.zeros(16, 3, 32, 32))
    pipe = Pipeline([AddGaussianNoise(0.3)])
    pipe.split_idx = 1; assert torch.equal(pipe(x), x)
    pipe.split_idx = 0; y = pipe(x)
    assert isinstance(y, TensorImage) and y.device == x.device and abs(y.std().item() - 0.3) < 0.02

def test_noise_p():
    x = TensorImage(torch.zeros(200, 1, 4, 4))
    assert torch.equal(AddGaussianNoise(1., p=0.)(x, split_idx=0), x)
    noisy = (AddGaussianNoise(1., p=0.5)(x, split_idx=0).abs().sum((1, 2, 3)) > 0).float().mean()
    assert 0.3 < noisy < 0.7

def test_normalize():
    n = normalize_tfm()
    assert isinstance(n, Normalize)
    torch.testing.assert_close(n.mean.flatten().cpu(), torch.tensor(imagenet_stats[0]))
    n = normalize_tfm([0.5]*3, [0.5]*3)
    x = TensorImage(torch.ones(2, 3, 4, 4))
    torch.testing.assert_close(n(x).as_subclass(torch.Tensor), torch.ones(2, 3, 4, 4))

def test_get_tfms_order_and_pipeline():
    item, batch = get_tfms(48, 'crop', 'flip', noise_std=0.2, mean=[0.5]*3, std=[0.25]*3)
    assert len(item) == 1 and item[0].size == (48, 48)
    names = [type(t).__name__ for t in sorted(batch + [IntToFloatTensor()], key=lambda t: t.order)]
    assert names == ['RandomFlip', 'IntToFloatTensor', 'Normalize', 'AddGaussianNoise']
    assert [type(t).__name__ for t in get_tfms(noise_std=0.)[1]] == ['RandomFlip', 'Normalize']
    x = TensorImage(torch.full((4, 3, 8, 8), 191, dtype=torch.uint8))
    pipe = Pipeline(batch + [IntToFloatTensor()]); pipe.split_idx = 1
    torch.testing.assert_close(pipe(x).as_subclass(torch.Tensor), torch.full((4, 3, 8, 8), (191/255 - 0.5) / 0.25))

def test_fastai_preset_runs():
    _, batch = get_tfms(32, aug='fastai')
    pipe = Pipeline(batch + [IntToFloatTensor()]); pipe.split_idx = 0
    assert pipe(TensorImage(torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8))).shape == (4, 3, 32, 32)

def test_open_image_decodes_jpegs_at_reduced_size(tmp_path):
    from finetune_kit.transforms import OpenImage
    im = Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 600), dtype=np.uint8))  # grayscale
    im.save(tmp_path/'a.jpg'); im.save(tmp_path/'a.png')
    for d, size in ((None, (600, 400)), (64, (150, 100)), (100, (150, 100)), (101, (300, 200)), (300, (600, 400))):
        out = OpenImage(d)(tmp_path/'a.jpg')
        assert isinstance(out, PILImage) and out.mode == 'RGB' and out.size == size and min(out.size) >= (d or 0)
    assert OpenImage(64)(tmp_path/'a.png').size == (600, 400) and OpenImage(64)(str(tmp_path/'a.png')).mode == 'RGB'
    assert OpenImage(64)(Image.new('L', (5, 5))).mode == 'L' and 'draft=64' in repr(OpenImage(64))

def test_random_flip_leaves_its_input_alone():
    x = TensorImage(torch.randint(0, 255, (8, 3, 4, 5), dtype=torch.uint8)); x0 = x.clone()
    torch.manual_seed(0); y = RandomFlip(0.5)(x, split_idx=0)
    assert torch.equal(x, x0) and type(y) is TensorImage
    torch.manual_seed(0); flip = torch.rand(8) < 0.5
    assert all(torch.equal(a, b.flip(-1) if f else b) for a, b, f in zip(y, x, flip))   # the same draws as before

def test_normalize_one_new_tensor():
    norm, fastai_norm = normalize_tfm(), Normalize.from_stats(*imagenet_stats)
    assert isinstance(norm, Normalize) and type(norm).__name__ == 'Normalize'   # what `set_norm` and `bundle_info` look for
    x8 = TensorImage(torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)); xf = TensorImage(x8.float() / 255); xf0 = xf.clone()
    assert torch.equal(norm(xf), fastai_norm(xf)) and torch.equal(xf, xf0)   # floats: fastai's numbers, input untouched
    torch.testing.assert_close(norm(x8).as_subclass(torch.Tensor), fastai_norm(xf).as_subclass(torch.Tensor), atol=1e-5, rtol=0)
    assert norm(x8).dtype == torch.float32 and type(norm(x8)) is TensorImage
    torch.testing.assert_close(norm.decode(norm(x8)).as_subclass(torch.Tensor), xf.as_subclass(torch.Tensor), atol=1e-6, rtol=0)
