"Tests of finetune_kit.datasets: cache folder, idx files, the shipped sample, the full Fashion-MNIST, the registry."
import os
from pathlib import Path
import numpy as np
import pytest
from PIL import Image
import finetune_kit.datasets as fd
from finetune_kit.datasets import (cache_dir, read_idx, write_idx, load_sample, build_sample, sample_path, fashion_mnist_path,
                                   resolve_data, show_sample_grid, DATASETS, FMNIST_CLASSES, DEBIAN_FMNIST_DIR,
                                   SAMPLE_N_TRAIN, SAMPLE_N_VALID)

HAVE_DEBIAN = (DEBIAN_FMNIST_DIR/'train-images-idx3-ubyte.gz').exists()

@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('FINETUNE_KIT_CACHE', str(tmp_path/'cache'))
    return tmp_path/'cache'

@pytest.fixture
def tiny_fmnist(tmp_path, monkeypatch):
    "A stand-in Fashion-MNIST of 30 train and 10 t10k images, pointed to by FINETUNE_KIT_FMNIST_DIR."
    s, d = load_sample(), tmp_path/'idx'
    d.mkdir()
    for split, n in (('train', 30), ('t10k', 10)):
        write_idx(s['x_train'][:n], d/f'{split}-images-idx3-ubyte.gz'); write_idx(s['y_train'][:n], d/f'{split}-labels-idx1-ubyte.gz')
    monkeypatch.setenv('FINETUNE_KIT_FMNIST_DIR', str(d))
    return d

def test_cache_dir_env(tmp_cache):
    assert cache_dir() == tmp_cache and tmp_cache.is_dir()

def test_cache_dir_default(monkeypatch, tmp_path):
    monkeypatch.delenv('FINETUNE_KIT_CACHE', raising=False); monkeypatch.setenv('HOME', str(tmp_path))
    assert cache_dir() == tmp_path/'.cache'/'finetune_kit'

def test_idx_roundtrip(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for name in ('a.gz', 'a.idx'): np.testing.assert_array_equal(read_idx(write_idx(x, tmp_path/name)), x)

def test_idx_bad_magic(tmp_path):
    (tmp_path/'bad').write_bytes(b'\x01\x02\x03\x04' + bytes(10))
    with pytest.raises(ValueError, match='not an idx file'): read_idx(tmp_path/'bad')

def test_sample_asset():
    s = load_sample()
    assert s['x_train'].shape == (SAMPLE_N_TRAIN, 28, 28) and s['x_valid'].shape == (SAMPLE_N_VALID, 28, 28)
    assert s['x_train'].dtype == np.uint8
    assert (np.bincount(s['y_train']) == SAMPLE_N_TRAIN // 10).all() and (np.bincount(s['y_valid']) == SAMPLE_N_VALID // 10).all()
    assert list(s['classes']) == FMNIST_CLASSES
    assert len(set(s['idx_train'])) == SAMPLE_N_TRAIN
    assert (fd.SAMPLE_FILE.parent/'FASHION_MNIST_LICENSE.txt').read_text().count('Zalando SE') == 1

@pytest.mark.skipif(not HAVE_DEBIAN, reason=f"Debian's Fashion-MNIST is not installed at {DEBIAN_FMNIST_DIR} (apt install dataset-fashion-mnist)")
def test_build_sample_reproduces_shipped(tmp_path):
    rebuilt, shipped = load_sample(build_sample(DEBIAN_FMNIST_DIR, dest=tmp_path/'s.npz')), load_sample()
    assert rebuilt.keys() == shipped.keys()
    for k in shipped: np.testing.assert_array_equal(rebuilt[k], shipped[k], err_msg=k)

@pytest.mark.skipif(not HAVE_DEBIAN, reason=f"Debian's Fashion-MNIST is not installed at {DEBIAN_FMNIST_DIR}")
def test_sample_pixels_match_source():
    s, (x, y) = load_sample(), fd.load_fmnist_split(DEBIAN_FMNIST_DIR, 't10k')
    np.testing.assert_array_equal(s['x_valid'], x[s['idx_valid']]); np.testing.assert_array_equal(s['y_valid'], y[s['idx_valid']])

def test_sample_path_layout(tmp_cache):
    p = sample_path()
    assert p == tmp_cache/'fashion-mnist-sample-v1'
    assert sorted(d.name for d in (p/'train').iterdir()) == sorted(FMNIST_CLASSES)
    assert len(list((p/'train').rglob('*.png'))) == SAMPLE_N_TRAIN and len(list((p/'valid').rglob('*.png'))) == SAMPLE_N_VALID
    s = load_sample()
    i = 5; fn = p/'valid'/FMNIST_CLASSES[s['y_valid'][i]]/f"{s['idx_valid'][i]}.png"
    np.testing.assert_array_equal(np.asarray(Image.open(fn)), s['x_valid'][i])
    mtime = p.stat().st_mtime_ns
    assert sample_path() == p and p.stat().st_mtime_ns == mtime   # second call: nothing rewritten

def test_sample_path_killed_leaves_nothing(tmp_cache, monkeypatch):
    real = fd._write_pngs
    def dies(root, *args, **kw):
        (root/'train').mkdir(parents=True); (root/'train'/'half.png').write_bytes(b'')
        raise KeyboardInterrupt
    monkeypatch.setattr(fd, '_write_pngs', dies)
    with pytest.raises(KeyboardInterrupt): sample_path()
    assert list(tmp_cache.iterdir()) == []
    monkeypatch.setattr(fd, '_write_pngs', real)
    assert len(list(sample_path().rglob('*.png'))) == SAMPLE_N_TRAIN + SAMPLE_N_VALID

def test_fashion_mnist_env_override(tmp_cache, tiny_fmnist):
    p = fashion_mnist_path()
    assert p.parent == tmp_cache and p.name.startswith('fashion-mnist-') and p.name != 'fashion-mnist-v1'
    assert len(list((p/'train').rglob('*.png'))) == 30 and len(list((p/'valid').rglob('*.png'))) == 10
    assert sorted(d.name for d in (p/'valid').iterdir()) == sorted(FMNIST_CLASSES)
    assert fashion_mnist_path() == p and resolve_data('fashion-mnist') == p

def test_fashion_mnist_env_missing(tmp_cache, tmp_path, monkeypatch):
    monkeypatch.setenv('FINETUNE_KIT_FMNIST_DIR', str(tmp_path/'nothing'))
    with pytest.raises(FileNotFoundError, match='FINETUNE_KIT_FMNIST_DIR'): fashion_mnist_path()

def test_fashion_mnist_no_source(tmp_cache, tmp_path, monkeypatch):
    import torchvision.datasets
    monkeypatch.delenv('FINETUNE_KIT_FMNIST_DIR', raising=False)
    monkeypatch.setattr(fd, 'DEBIAN_FMNIST_DIR', tmp_path/'absent')
    def offline(*a, **k): raise RuntimeError('network unreachable')
    monkeypatch.setattr(torchvision.datasets, 'FashionMNIST', offline)
    with pytest.raises(FileNotFoundError) as e: fashion_mnist_path()
    assert 'apt install dataset-fashion-mnist' in str(e.value) and 'network' in str(e.value)

@pytest.mark.slow
@pytest.mark.skipif(not HAVE_DEBIAN, reason=f"Debian's Fashion-MNIST is not installed at {DEBIAN_FMNIST_DIR}")
def test_fashion_mnist_full(monkeypatch):
    monkeypatch.delenv('FINETUNE_KIT_FMNIST_DIR', raising=False)
    p = fashion_mnist_path()
    assert p.name == 'fashion-mnist-v1'
    assert len(list((p/'train').rglob('*.png'))) == 60000 and len(list((p/'valid').rglob('*.png'))) == 10000

def test_resolve_data(tmp_path, tmp_cache):
    assert set(DATASETS) == {'sample', 'fashion-mnist'}
    assert resolve_data('sample') == sample_path()
    assert resolve_data(tmp_path) == tmp_path and resolve_data(str(tmp_path)) == tmp_path
    with pytest.raises(FileNotFoundError, match=r"'nope'.*sample, fashion-mnist"): resolve_data('nope')

def test_show_sample_grid():
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig = show_sample_grid(sample_path(), n_per_class=3)
    assert len(fig.axes[0].get_yticklabels()) == 10 and fig.axes[0].images[0].get_array().shape == (280, 84, 3)
    fig2, ax = plt.subplots(); assert show_sample_grid(sample_path()/'valid', 2, ax=ax) is fig2
    plt.close('all')
