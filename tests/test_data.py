"Tests of finetune_kit.data: every source and task, the data check and its bad inputs, DataLoaders."
import io, os, shutil, warnings
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from PIL import Image
from finetune_kit.datasets import sample_path, write_idx, load_sample
from fastai.torch_core import TensorImage
from finetune_kit.data import (load_source, check_data, check_file, detect_task, resolve_task, get_dls, DataReport, MemoryDL)

@pytest.fixture(scope='module')
def sample(): return sample_path()

def pngs(sample, cls, n, split='train'): return sorted((sample/split/cls).iterdir())[:n]

@pytest.fixture
def folder(tmp_path, sample):
    "Class folders (no split): 20 images each of Bag, Coat, Sneaker."
    for c in ('Bag', 'Coat', 'Sneaker'):
        (tmp_path/'data'/c).mkdir(parents=True)
        for f in pngs(sample, c, 20): shutil.copy(f, tmp_path/'data'/c)
    return tmp_path/'data'

@pytest.fixture
def split_folder(tmp_path, sample):
    "train/ and valid/ folders: 16 and 8 images of Bag and Trouser."
    for split, n in (('train', 16), ('valid', 8)):
        for c in ('Bag', 'Trouser'):
            (tmp_path/'tv'/split/c).mkdir(parents=True)
            for f in pngs(sample, c, n, split): shutil.copy(f, tmp_path/'tv'/split/c)
    return tmp_path/'tv'

def quiet_check(*args, **kw):
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter('always')
        return check_data(*args, progress=False, **kw), [str(w.message) for w in ws]

# --- sources and tasks ---

def test_class_folders_seeded_split(folder):
    a, b, c = (load_source(folder, 0.25, s).items for s in (1, 1, 2))
    assert len(a) == 60 and a.is_valid.sum() == 15
    assert a.is_valid.tolist() == b.is_valid.tolist() != c.is_valid.tolist()
    assert set(a.label) == {'Bag', 'Coat', 'Sneaker'}

def test_train_valid_folders(split_folder):
    r, _ = quiet_check(split_folder)
    assert r.kind == 'train/valid folders' and (r.n_train, r.n_valid) == (32, 16)
    assert r.task == 'binary' and r.counts.loc['Bag'].tolist() == [16, 8]
    dls = get_dls(split_folder, batch_size=8, img_size=32)
    assert dls.task == 'binary' and list(dls.vocab) == ['Bag', 'Trouser']

def test_sample_by_name():
    dls = get_dls('sample', batch_size=32, img_size=32)
    xb, yb = dls.one_batch()
    assert xb.shape == (32, 3, 32, 32) and yb.shape == (32,) and dls.task == 'single' and len(dls.vocab) == 10
    assert isinstance(dls.data_report, DataReport) and dls.data_report.n_train == 6000
    assert isinstance(dls.train, MemoryDL) and dls.train.xs is not None

def test_fashion_mnist_by_name(tmp_path, monkeypatch):
    s, d = load_sample(), tmp_path/'idx'
    d.mkdir()
    for split, n in (('train', 40), ('t10k', 20)):
        write_idx(s['x_train'][:n], d/f'{split}-images-idx3-ubyte.gz'); write_idx(s['y_train'][:n], d/f'{split}-labels-idx1-ubyte.gz')
    monkeypatch.setenv('FINETUNE_KIT_FMNIST_DIR', str(d)); monkeypatch.setenv('FINETUNE_KIT_CACHE', str(tmp_path/'cache'))
    r, _ = quiet_check('fashion-mnist')
    assert (r.n_train, r.n_valid) == (40, 20)

def test_file_name_labels(tmp_path, sample):
    (tmp_path/'pets').mkdir()
    for c in ('Bag', 'Coat'):
        for f in pngs(sample, c, 10): shutil.copy(f, tmp_path/'pets'/f'{c.lower()}_{f.stem}.png')
    (tmp_path/'pets'/'README.txt').write_text('no label here')
    r, ws = quiet_check(tmp_path/'pets', label_re=r'^(.*)_\d+\.png$')
    assert r.kind == 'file names' and r.classes == ['bag', 'coat'] and r.task == 'binary'
    assert [Path(p).name for p, _ in r.bad] == ['README.txt'] and 'README.txt' in ws[0]
    dls = get_dls(tmp_path/'pets', label_re=r'^(.*)_\d+\.png$', batch_size=4, img_size=32)
    assert list(dls.vocab) == ['bag', 'coat']

def test_file_name_label_errors(tmp_path, folder):
    with pytest.raises(ValueError, match='not a valid regular expression'): load_source(folder, label_re='(')
    with pytest.raises(ValueError, match='needs a group'): load_source(folder, label_re=r'\d+')
    with pytest.raises(ValueError, match='matches none'): load_source(folder, label_re=r'^cat_(\d+)')

def write_csv(root, rows, name='labels.csv', columns=('path', 'label'), **cols):
    df = pd.DataFrame(rows, columns=list(columns))
    for k, v in cols.items(): df[k] = v
    df.to_csv(root/name, index=False)
    return root/name

def test_csv_single_label(folder):
    rows = [(f'{c}/{f.name}', c.lower()) for c in ('Bag', 'Coat', 'Sneaker') for f in sorted((folder/c).iterdir())]
    r, _ = quiet_check(write_csv(folder, rows))
    assert r.kind == 'csv' and r.task == 'single' and r.classes == ['bag', 'coat', 'sneaker'] and r.n_files == 60

def test_csv_is_valid_column(folder):
    rows = [(f'Bag/{f.name}', 'bag') for f in sorted((folder/'Bag').iterdir())] + [(f'Coat/{f.name}', 'coat') for f in sorted((folder/'Coat').iterdir())]
    r, _ = quiet_check(write_csv(folder, rows, is_valid=[i % 4 == 0 for i in range(40)]))
    assert (r.n_train, r.n_valid) == (30, 10)

def test_csv_multi_label(folder):
    rows = [(f'{c}/{f.name}', f'{c.lower()}' + (';dark' if i % 2 else '')) for c in ('Bag', 'Coat') for i, f in enumerate(sorted((folder/c).iterdir()))]
    fn = write_csv(folder, rows)
    r, _ = quiet_check(fn, label_delim=';')
    assert r.task == 'multi' and r.classes == ['bag', 'coat', 'dark'] and r.counts.sum().sum() == 60
    dls = get_dls(fn, label_delim=';', batch_size=8, img_size=32)
    xb, yb = dls.one_batch()
    assert dls.task == 'multi' and yb.shape == (8, 3) and set(yb.unique().tolist()) <= {0., 1.}

def test_dataframe_source(folder):
    files = sorted(folder.rglob('*.png'))
    df = pd.DataFrame({'path': [str(f) for f in files], 'label': [f.parent.name for f in files]})
    r, _ = quiet_check(df, valid_pct=0.5)
    assert r.kind == 'dataframe' and (r.n_train, r.n_valid) == (30, 30) and r.task == 'single'
    dls = get_dls(df, batch_size=8, img_size=32, in_memory=False)
    assert not isinstance(dls.train.xs, torch.Tensor) and dls.one_batch()[0].shape == (8, 3, 32, 32)

def test_dataframe_check_cached_in_kit_cache(folder, tmp_path, monkeypatch):
    monkeypatch.setenv('FINETUNE_KIT_CACHE', str(tmp_path/'cache')); monkeypatch.chdir(tmp_path)
    files = sorted(folder.rglob('*.png'))
    quiet_check(pd.DataFrame({'path': [str(f) for f in files], 'label': [f.parent.name for f in files]}))
    assert list((tmp_path/'cache'/'checks').glob('check-*.json')) and not (tmp_path/'.finetune_kit').exists()

def test_same_files_other_labels(folder):
    "Preloaded images are shared between DataLoaders of the same files, labels are not."
    rows = [(f'{c}/{f.name}', c.lower() + (' dark' if i % 2 else '')) for c in ('Bag', 'Coat', 'Sneaker') for i, f in enumerate(sorted((folder/c).iterdir()))]
    fn = write_csv(folder, rows, is_valid=[i % 5 == 0 for i in range(60)])
    multi = get_dls(fn, label_delim=' ', batch_size=4, img_size=32)
    plain = get_dls(write_csv(folder, [(p, l.split()[0]) for p, l in rows], 'one.csv', is_valid=[i % 5 == 0 for i in range(60)]), batch_size=4, img_size=32)
    assert multi.train.xs is plain.train.xs
    assert multi.valid.one_batch()[1].shape == (4, 4) and plain.valid.one_batch()[1].shape == (4,)

def bag_coat_rows(folder):
    return [(f'{c}/{f.name}', c.lower()) for c in ('Bag', 'Coat') for f in sorted((folder/c).iterdir())]

def test_csv_fname_label(folder):
    "fastai's own column names: `fname,label`."
    fn = write_csv(folder, bag_coat_rows(folder), columns=('fname', 'label'))
    r, _ = quiet_check(fn)
    assert r.kind == 'csv' and r.bad == [] and r.n_files == 40 and r.classes == ['bag', 'coat'] and r.task == 'binary'
    assert r.items.path.tolist()[0] == str(folder/'Bag'/sorted(os.listdir(folder/'Bag'))[0])
    dls = get_dls(fn, batch_size=8, img_size=32)
    assert list(dls.vocab) == ['bag', 'coat'] and dls.one_batch()[0].shape == (8, 3, 32, 32)

def test_csv_columns_found_by_name_in_any_order(folder):
    rows = [(l, p) for p, l in bag_coat_rows(folder)]
    r, _ = quiet_check(write_csv(folder, rows, columns=('label', 'image')))
    assert r.bad == [] and r.n_files == 40 and r.classes == ['bag', 'coat']
    assert all(Path(p).parent.name.lower() == l for p, l in zip(r.items.path, r.items.label))
    r, _ = quiet_check(write_csv(folder, rows, 'upper.csv', columns=('Class', 'FileName'), notes='x'))
    assert r.bad == [] and r.classes == ['bag', 'coat']

def test_csv_columns_by_position(folder):
    rows = bag_coat_rows(folder)
    r, _ = quiet_check(write_csv(folder, rows, columns=('a', 'b'), is_valid=[i % 4 == 0 for i in range(40)]))
    assert r.bad == [] and r.classes == ['bag', 'coat'] and (r.n_train, r.n_valid) == (30, 10)
    r, _ = quiet_check(write_csv(folder, rows, 'half.csv', columns=('fname', 'breed')))
    assert r.bad == [] and r.classes == ['bag', 'coat']
    r, _ = quiet_check(write_csv(folder, [(p, '01' if l == 'bag' else '02') for p, l in rows], 'codes.csv', columns=('x', 'y')))
    assert r.classes == ['01', '02']
    with pytest.raises(ValueError, match=r"can't tell .*\['a', 'b', 'c'\].*path_col"):
        load_source(write_csv(folder, rows, 'three.csv', columns=('a', 'b'), c='x'))
    with pytest.raises(ValueError, match=r"several label columns \['label', 'class'\].*label_col"):
        load_source(write_csv(folder, rows, 'two.csv', **{'class': 'x'}))

def test_explicit_columns(folder):
    rows = bag_coat_rows(folder)
    fn = write_csv(folder, [('x', p, l) for p, l in rows], columns=('notes', 'img', 'cls'))
    r, _ = quiet_check(fn, path_col='img', label_col='cls')
    assert r.bad == [] and r.classes == ['bag', 'coat']
    dls = get_dls(fn, path_col='img', label_col='cls', batch_size=8, img_size=32)
    assert list(dls.vocab) == ['bag', 'coat']
    df = pd.DataFrame({'label': ['wrong']*40, 'who': [l for _, l in rows], 'path': [str(folder/p) for p, _ in rows]})
    assert load_source(df, label_col='who').items.label.tolist() == [l for _, l in rows]
    with pytest.raises(ValueError, match='name columns of a CSV or DataFrame'): load_source(folder, path_col='img')

def test_csv_missing_named_column(folder):
    fn = write_csv(folder, bag_coat_rows(folder))
    with pytest.raises(ValueError) as e: get_dls(fn, path_col='fname')
    msg = str(e.value)
    assert '\n' not in msg and str(fn) in msg and "'fname'" in msg and "['path', 'label']" in msg
    with pytest.raises(ValueError, match=r"no column 'cls' \(label_col\).*\['path', 'label'\]"): check_data(fn, label_col='cls')
    with pytest.raises(ValueError, match=r"DataFrame has no column 'f'"): load_source(pd.DataFrame({'path': [], 'label': []}), path_col='f')

def test_task_detection_and_override(folder):
    assert detect_task([['a'], ['b']]) == 'binary' and detect_task([['a'], ['b'], ['c']]) == 'single'
    assert detect_task([['a', 'b'], ['c']]) == 'multi' and detect_task([[], ['c']]) == 'multi'
    dls = get_dls(folder, task='multi', batch_size=8, img_size=32)
    assert dls.task == 'multi' and dls.one_batch()[1].shape == (8, 3)
    with pytest.raises(ValueError, match="task='binary' needs exactly 2 classes"): check_data(folder, task='binary', progress=False)
    with pytest.raises(ValueError, match="is not one of auto, single, binary, multi"): resolve_task('regression', [['a']])
    assert resolve_task('single', [['a'], ['b']]) == 'single'

def test_task_single_on_multi_labels(folder):
    rows = [(f'Bag/{f.name}', 'bag dark') for f in sorted((folder/'Bag').iterdir())] + [(f'Coat/{f.name}', 'coat') for f in sorted((folder/'Coat').iterdir())]
    with pytest.raises(ValueError, match="use task='multi'"): check_data(write_csv(folder, rows), label_delim=' ', task='single', progress=False)

# --- bad inputs ---

def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match='neither a dataset name'): get_dls(tmp_path/'nope')

def test_not_csv_file(tmp_path):
    (tmp_path/'x.txt').write_text('hi')
    with pytest.raises(ValueError, match='not a .csv'): load_source(tmp_path/'x.txt')

def test_no_class_folders(tmp_path, sample):
    shutil.copy(pngs(sample, 'Bag', 1)[0], tmp_path)
    with pytest.raises(ValueError, match='no class folders.*label_re'): load_source(tmp_path)

def test_bad_label_delim_use(folder):
    with pytest.raises(ValueError, match='is a folder'): load_source(folder, label_delim=';')
    with pytest.raises(ValueError, match="label_delim='' is empty"): load_source(folder, label_delim='')
    fn = write_csv(folder, [('Bag/a.png', 'bag')])
    with pytest.raises(ValueError, match='label_re reads labels from file names'): load_source(fn, label_re=r'(.*)')

def test_empty_class(folder):
    (folder/'Shirt').mkdir()
    r, ws = quiet_check(folder)
    assert r.empty_classes == ['Shirt'] and r.counts.loc['Shirt'].tolist() == [0, 0]
    assert any('without training images: Shirt' in w for w in ws) and 'Shirt' in r.summary()

def test_single_class(tmp_path, sample):
    (tmp_path/'one'/'Bag').mkdir(parents=True)
    for f in pngs(sample, 'Bag', 10): shutil.copy(f, tmp_path/'one'/'Bag')
    with pytest.raises(ValueError, match=r'single class \(Bag\).*at least two'): get_dls(tmp_path/'one')

def test_too_small_for_a_split(tmp_path, sample):
    for c in ('Bag', 'Coat'):
        (tmp_path/'d'/c).mkdir(parents=True); shutil.copy(pngs(sample, c, 1)[0], tmp_path/'d'/c)
    with pytest.raises(ValueError, match='both need some'): check_data(tmp_path/'d', valid_pct=0.2, progress=False)

def make_bad_files(folder):
    "A corrupt, a truncated and a non-image file, plus grayscale/RGBA/palette/CMYK images that are fine."
    good = sorted((folder/'Bag').iterdir())[0].read_bytes()
    (folder/'Bag'/'corrupt.png').write_bytes(good[:16] + os.urandom(300))
    (folder/'Bag'/'truncated.png').write_bytes(good[:len(good)//2])
    (folder/'Coat'/'notes.jpg').write_text('not an image at all')
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 20), dtype=np.uint8)).save(folder/'Coat'/'gray.png')
    Image.fromarray(rng.integers(0, 255, (20, 30, 4), dtype=np.uint8), 'RGBA').save(folder/'Coat'/'rgba.png')
    Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8)).convert('P').save(folder/'Sneaker'/'palette.png')
    Image.new('CMYK', (28, 28), (10, 200, 30, 5)).save(folder/'Sneaker'/'cmyk.jpg')
    return {'corrupt.png', 'truncated.png', 'notes.jpg'}

def test_check_file_reasons(folder):
    make_bad_files(folder)
    assert check_file(folder/'Coat'/'notes.jpg')[:2] == (False, 'not an image')
    assert check_file(folder/'Bag'/'truncated.png')[1].startswith('corrupt or truncated')
    assert check_file(folder/'Bag'/'missing.png')[:2] == (False, 'missing')
    assert check_file(folder/'Sneaker'/'cmyk.jpg')[:3] == (True, '', 'CMYK')

def test_bad_files_skipped_and_training_data_usable(folder):
    names = make_bad_files(folder)
    r, _ = quiet_check(folder, max_bad_pct=0.1)
    with pytest.warns(UserWarning) as rec: dls = get_dls(folder, batch_size=8, img_size=32, max_bad_pct=0.1, in_memory=False)
    msg = '\n'.join(str(w.message) for w in rec)
    assert {Path(p).name for p, _ in r.bad} == names and all(n in msg for n in names)
    assert {'L', 'RGBA', 'P', 'CMYK'} <= set(r.modes) and 'converted to RGB' in r.summary()
    assert len(dls.train_ds) + len(dls.valid_ds) == 64        # 60 + 4 odd-mode images, 3 bad files left out
    for dl in (dls.train, dls.valid):
        for xb, yb in dl: assert xb.shape[1:] == (3, 32, 32)   # every image loads, as RGB

def test_too_many_bad_files(folder):
    make_bad_files(folder)
    with pytest.raises(ValueError, match=r'3 of 67 files .* more than max_bad_pct=2%'): get_dls(folder, max_bad_pct=0.02)
    r, _ = quiet_check(folder, max_bad_pct=None)
    assert len(r.bad) == 3

def test_csv_path_escaping_root(tmp_path, folder):
    outside = tmp_path/'secret.png'; shutil.copy(sorted((folder/'Bag').iterdir())[0], outside)
    rows = [(f'{c}/{f.name}', c) for c in ('Bag', 'Coat') for f in sorted((folder/c).iterdir())] + [('../secret.png', 'Bag'), (str(outside), 'Bag')]
    r, ws = quiet_check(write_csv(folder, rows), max_bad_pct=0.1)
    assert [Path(p).name for p, _ in r.bad] == ['secret.png', 'secret.png'] and all('escapes the data root' in why for _, why in r.bad)
    assert r.n_files == 42 and str(outside) not in r.items.path.tolist() and any('escapes' in w for w in ws)

def test_csv_missing_file(folder):
    rows = [(f'{c}/{f.name}', c) for c in ('Bag', 'Coat') for f in sorted((folder/c).iterdir())] + [('Bag/gone.png', 'Bag')]
    r, _ = quiet_check(write_csv(folder, rows))
    assert r.bad == [(str(folder/'Bag'/'gone.png'), 'missing')]

def test_duplicates_across_splits(split_folder):
    f = sorted((split_folder/'train'/'Bag').iterdir())[0]
    shutil.copy(f, split_folder/'valid'/'Bag'/'copy.png')
    r, ws = quiet_check(split_folder)
    assert r.duplicates == [(str(f), str(split_folder/'valid'/'Bag'/'copy.png'))]
    assert any('identical file(s) in both train and valid' in w for w in ws) and 'identical files in train and valid: 1' in r.summary()

# --- caching, report, DataLoaders ---

def test_check_is_cached_and_invalidated(folder):
    a, _ = quiet_check(folder); b, _ = quiet_check(folder)
    assert (a.cached, b.cached) == (False, True) and a.bad == b.bad and a.counts.equals(b.counts)
    assert list((folder/'.finetune_kit').glob('check-*.json'))
    (folder/'Bag'/'new.png').write_bytes(b'junk')
    c, _ = quiet_check(folder, max_bad_pct=None)
    assert not c.cached and len(c.bad) == 1
    assert not any('.finetune_kit' in p for p in c.items.path)

def test_report_summary(split_folder):
    r, _ = quiet_check(split_folder)
    s = repr(r)
    assert s == r.summary() and 'task binary' in s and 'train 32, valid 16' in s and 'Trouser' in s
    assert list(r.counts.columns) == ['train', 'valid'] and r.bad_pct == 0 and '28x28 48' in s

def test_memory_and_streamed_batches_agree(folder):
    kw = dict(batch_size=12, img_size=40, resize_method='pad', aug='none')
    mem, streamed = get_dls(folder, in_memory=True, **kw), get_dls(folder, in_memory=False, **kw)
    assert mem.train.xs.shape == (48, 3, 40, 40) and streamed.train.xs is None
    (xm, ym), (xs, ys) = mem.valid.one_batch(), streamed.valid.one_batch()
    torch.testing.assert_close(xm.as_subclass(torch.Tensor), xs.as_subclass(torch.Tensor)); assert torch.equal(ym, ys)
    assert type(xm) == type(xs) and type(ym) == type(ys)
    assert len(list(mem.train)) == len(list(streamed.train)) == 4
    unshuffled = mem.train.new(shuffle=False, drop_last=False)
    assert unshuffled.xs is mem.train.xs and len(list(unshuffled)) == 4
    test = mem.test_dl(sorted(folder.rglob('*.png'))[:5])
    assert test.xs is None and test.one_batch()[0].shape == (5, 3, 40, 40)

def test_get_dls_options(folder):
    dls = get_dls(folder, img_size=24, batch_size=5, resize_method='crop', aug='fastai', noise_std=0.1, mean=[0.5]*3, std=[0.5]*3, num_workers=0)
    names = [type(t).__name__ for t in dls.train.after_batch.fs]
    assert names[-2:] == ['Normalize', 'AddGaussianNoise'] and dls.one_batch()[0].shape == (5, 3, 24, 24)
    with pytest.raises(ValueError, match='in_memory'): get_dls(folder, in_memory='maybe')

def test_show_batch(folder):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    get_dls(folder, batch_size=4, img_size=32).show_batch(max_n=4)
    assert len(plt.gcf().axes) == 4
    plt.close('all')

def test_no_check(folder):
    make_bad_files(folder)
    dls = get_dls(folder, check=False, in_memory=False, batch_size=4, img_size=32)
    assert dls.data_report.bad == [] and not dls.data_report.duplicates and len(dls.train_ds) + len(dls.valid_ds) == 67

def tiny_learner(dls, loss_func):
    from fastai.learner import Learner
    from torch import nn
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, dls.c))
    return Learner(dls, model, loss_func=loss_func)

@pytest.mark.parametrize('in_memory', [True, False])
def test_fastai_training_loop(folder, in_memory):
    from fastai.losses import CrossEntropyLossFlat
    dls = get_dls(folder, batch_size=8, img_size=32, noise_std=0.1, in_memory=in_memory)
    learn = tiny_learner(dls, CrossEntropyLossFlat())
    learn.fit(1, 1e-2)
    preds, targs = learn.get_preds()
    assert preds.shape == (len(dls.valid_ds), 3) and np.isfinite(learn.recorder.values[-1]).all()

def test_fastai_training_loop_multi(folder):
    from fastai.losses import BCEWithLogitsLossFlat
    rows = [(f'{c}/{f.name}', c.lower() + (';dark' if i % 2 else '')) for c in ('Bag', 'Coat') for i, f in enumerate(sorted((folder/c).iterdir()))]
    dls = get_dls(write_csv(folder, rows), label_delim=';', batch_size=8, img_size=32)
    learn = tiny_learner(dls, BCEWithLogitsLossFlat())
    learn.fit(1, 1e-2)
    assert learn.get_preds()[0].shape == (len(dls.valid_ds), 3)

# --- the disk cache of resized images, worker processes, reduced-size JPEG decoding ---

from finetune_kit import data as fkdata

@pytest.fixture
def kit_cache(tmp_path, monkeypatch):
    "An empty kit cache, and no preloaded images kept in this process."
    monkeypatch.setenv('FINETUNE_KIT_CACHE', str(tmp_path/'kcache')); monkeypatch.delenv('FINETUNE_KIT_NO_CACHE', raising=False)
    monkeypatch.setattr(fkdata, '_preloaded', {})
    return tmp_path/'kcache'/'images'

def count_decodes(monkeypatch):
    calls = []
    real = fkdata._decode_all
    monkeypatch.setattr(fkdata, '_decode_all', lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls

def test_disk_cache_reused_by_the_next_run(folder, kit_cache, monkeypatch):
    calls, kw = count_decodes(monkeypatch), dict(batch_size=8, img_size=24, in_memory=True)
    a = get_dls(folder, **kw); fkdata._wait_writes()   # a cold start saves the check's images in the background
    assert len(calls) == 0 and len(list(kit_cache.glob('*.npy'))) == 2 and not list(kit_cache.glob('.*'))  # decoded by the check
    fkdata._preloaded.clear()                 # a new process: nothing in memory
    b = get_dls(folder, **kw)
    assert len(calls) == 0 and torch.equal(a.train.xs, b.train.xs) and torch.equal(a.valid.xs, b.valid.xs)
    get_dls(folder, **{**kw, 'img_size': 32}); get_dls(folder, **{**kw, 'resize_method': 'pad'})   # check cached: the preload decodes
    assert len(calls) == 4 and len(list(kit_cache.glob('*.npy'))) == 6

def test_disk_cache_invalidated_when_a_file_changes(folder, kit_cache, monkeypatch):
    kw = dict(batch_size=8, img_size=24, in_memory=True, valid_pct=0.5, aug='none')
    a = get_dls(folder, **kw); fkdata._wait_writes(); fkdata._preloaded.clear()
    f = sorted((folder/'Bag').iterdir())[0]
    Image.new('L', (28, 28), 255).save(f)    # same path, new content
    b = get_dls(folder, **kw); fkdata._wait_writes()
    assert len(list(kit_cache.glob('*.npy'))) == 3   # a new set for the split holding the changed file, the other reused
    dl = b.valid if str(f) in b.valid.items.path.tolist() else b.train
    assert (dl.xs[dl.items.path.tolist().index(str(f))] == 255).all()

def test_disk_cache_bounded(folder, kit_cache, monkeypatch):
    kw = dict(batch_size=8, img_size=24, in_memory=True)
    monkeypatch.setenv('FINETUNE_KIT_CACHE_GB', str(120_000 / 2**30))  # a training and a validation split of 24 px fit, not more
    get_dls(folder, **kw); fkdata._wait_writes(); first = {f.name for f in kit_cache.glob('*.npy')}
    assert len(first) == 2
    dls = get_dls(folder, **{**kw, 'img_size': 25})
    left = {f.name for f in kit_cache.glob('*.npy')}
    assert sum(f.stat().st_size for f in kit_cache.glob('*.npy')) <= 120_000 and first - left
    assert fkdata._cache_file(fkdata._preload_key(dls.valid)).name in left   # the newest set stays
    monkeypatch.setenv('FINETUNE_KIT_CACHE_GB', '0')
    assert get_dls(folder, **{**kw, 'img_size': 26}).train.xs.shape == (48, 3, 26, 26)   # too big to cache: memory only
    assert {f.name for f in kit_cache.glob('*.npy')} == left

def test_disk_cache_off(folder, kit_cache, monkeypatch):
    kw = dict(batch_size=8, img_size=24, in_memory=True)
    get_dls(folder, cache=False, **kw)
    monkeypatch.setenv('FINETUNE_KIT_NO_CACHE', '1'); get_dls(folder, img_size=32, **{k: v for k, v in kw.items() if k != 'img_size'})
    assert not kit_cache.exists() or not list(kit_cache.iterdir())
    assert not fkdata.cache_enabled() and fkdata.cache_enabled(True)

def test_disk_cache_serves_sets_too_big_for_memory(folder, kit_cache, monkeypatch):
    monkeypatch.setattr(fkdata, 'MEM_CACHE_MB', 0)
    dls = get_dls(folder, batch_size=8, img_size=24)
    assert dls.train.xs is not None and len(list(kit_cache.glob('*.npy'))) == 2
    assert get_dls(folder, batch_size=8, img_size=24, cache=False).train.xs is None

def test_decoding_in_worker_processes(folder, kit_cache):
    dls = get_dls(folder, batch_size=8, img_size=24, in_memory=False)
    assert dls.train.fake_l.num_workers == fkdata._n_cores()
    for rm in ('squish', 'crop'):
        dl = get_dls(folder, batch_size=8, img_size=24, resize_method=rm, in_memory=False, num_workers=0).valid
        ref = torch.stack([fkdata.compose_tfms(dl.dataset.tls[0][i], tfms=dl.after_item.fs, split_idx=1).as_subclass(torch.Tensor)
                           for i in range(len(dl.dataset))])
        out = fkdata._decode_all(dl, np.zeros(tuple(ref.shape), np.uint8), n_workers=2, bs=4)
        assert (torch.from_numpy(out).int() - ref.int()).abs().max() <= (rm == 'squish')   # squish: PyTorch's kernel, within a level

def test_jpeg_check_and_reduced_decoding(tmp_path, kit_cache):
    rng = np.random.default_rng(0)
    for c in ('a', 'b'):
        (tmp_path/'j'/c).mkdir(parents=True)
        for i in range(6): Image.fromarray(rng.integers(0, 255, (300, 500, 3), dtype=np.uint8)).save(tmp_path/'j'/c/f'{i}.jpg')
    data = (tmp_path/'j'/'a'/'0.jpg').read_bytes(); (tmp_path/'j'/'a'/'0.jpg').write_bytes(data[:len(data)//2])
    r, _ = quiet_check(tmp_path/'j', max_bad_pct=None)
    assert [Path(p).name for p, _ in r.bad] == ['0.jpg'] and r.sizes == {(500, 300): 11}
    dls = get_dls(tmp_path/'j', img_size=64, batch_size=4, max_bad_pct=None, in_memory=False, num_workers=0)
    assert dls.train_ds.tls[0].tfms.fs[-1].draft == 64 and dls.train_ds[0][0].size == (125, 75)

def test_augmentation_on_batches(folder, kit_cache):
    dls = get_dls(folder, batch_size=8, img_size=24, aug='fastai', noise_std=0.1, in_memory=False)
    assert [type(t).__name__ for t in dls.train.after_item.fs] == ['Resize', 'ToTensor']
    assert {'Flip', 'Normalize', 'AddGaussianNoise'} <= {type(t).__name__ for t in dls.train.after_batch.fs}

# --- one decode per file on a cold start; batches converted and normalised in one step ---

def count_opens(monkeypatch):
    "Counts of `PIL.Image.open` calls (every decode starts with one)."
    calls, real = [], Image.open
    monkeypatch.setattr(Image, 'open', lambda fp, *a, **k: calls.append(fp) or real(fp, *a, **k))
    return calls

def photos(root, n=8, seed=0):
    "Two class folders of `n` random JPEG photos of 120-200 pixels each."
    rng = np.random.default_rng(seed)
    for c in ('a', 'b'):
        (root/c).mkdir(parents=True)
        for i in range(n):
            h, w = rng.integers(120, 200, 2)
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root/c/f'{i}.jpg', quality=90)
    return root

def reference_images(dl):
    "`dl`'s images through fastai's own item pipeline (validation mode), as the preload made them before."
    return torch.stack([fkdata.compose_tfms(dl.dataset.tls[0][i], tfms=dl.after_item.fs, split_idx=1).as_subclass(torch.Tensor)
                        for i in range(len(dl.dataset))])

def assert_same_images(x, ref):
    "Equal to fastai's images, or within one level where the kit squishes with PyTorch's kernel instead of PIL's."
    assert x.shape == ref.shape and (x.int() - ref.int()).abs().max() <= 1

def test_cold_start_decodes_each_file_once(folder, kit_cache, monkeypatch):
    kw = dict(batch_size=8, img_size=24, in_memory=True, num_workers=0, progress=False)
    opens, decodes = count_opens(monkeypatch), count_decodes(monkeypatch)
    get_dls(folder, **kw); fkdata._wait_writes(); cold = len(opens)
    fkdata._preloaded.clear(); del opens[:]
    get_dls(folder, **kw); warm = len(opens)    # check cached, images in the disk cache: only fastai's setup opens a file
    assert cold - warm == 60 and not decodes     # the 60 files, once each; the preload decoded nothing

@pytest.mark.parametrize('resize_method', ['squish', 'crop', 'pad'])
def test_decoded_once_same_images(tmp_path, kit_cache, monkeypatch, resize_method):
    data, kw = photos(tmp_path/'p'), dict(batch_size=4, img_size=64, resize_method=resize_method, in_memory=True, cache=False, num_workers=0)
    decodes = count_decodes(monkeypatch)
    cold = get_dls(data, **kw)
    assert not decodes
    for dl in (cold.train, cold.valid): assert_same_images(dl.xs, reference_images(dl))
    fkdata._preloaded.clear()
    warm = get_dls(data, **kw)                 # check cached: the preload decodes, to the same bytes
    assert len(decodes) == 2 and torch.equal(warm.train.xs, cold.train.xs) and torch.equal(warm.valid.xs, cold.valid.xs)

def test_bad_files_left_out_when_decoding_once(folder, kit_cache, monkeypatch):
    names, decodes = make_bad_files(folder), count_decodes(monkeypatch)
    with pytest.warns(UserWarning) as rec: dls = get_dls(folder, batch_size=8, img_size=32, max_bad_pct=0.1, in_memory=True)
    assert not decodes and all(n in '\n'.join(str(w.message) for w in rec) for n in names)
    assert {Path(p).name for p, _ in dls.data_report.bad} == names
    assert len(dls.train.xs) + len(dls.valid.xs) == 64 and not names & {Path(p).name for p in dls.train.items.path}
    for dl in (dls.train, dls.valid): assert_same_images(dl.xs, reference_images(dl))
    r, _ = quiet_check(folder, max_bad_pct=0.1)   # the check's cache holds the same results
    assert r.cached and r.bad == dls.data_report.bad and r.modes == dls.data_report.modes

def test_decoded_images_bounded(folder, kit_cache, monkeypatch):
    decodes = count_decodes(monkeypatch)
    ref = get_dls(folder, batch_size=8, img_size=24, in_memory=True, cache=False)
    fkdata._preloaded.clear(); shutil.rmtree(folder/'.finetune_kit')
    monkeypatch.setattr(fkdata, 'MEM_CACHE_MB', 0.01)     # 10 KB: the check stops keeping images, the preload decodes
    dls = get_dls(folder, batch_size=8, img_size=24, in_memory=True, cache=False)
    assert len(decodes) == 2 and torch.equal(dls.train.xs, ref.train.xs) and torch.equal(dls.valid.xs, ref.valid.xs)

def test_batches_converted_in_one_step(folder, kit_cache):
    from fastai.data.transforms import IntToFloatTensor
    from finetune_kit.transforms import normalize_tfm
    dls = get_dls(folder, batch_size=8, img_size=24, aug='none')
    assert not any(isinstance(t, IntToFloatTensor) for t in dls.train.after_batch.fs)
    assert any(isinstance(t, IntToFloatTensor) for t in get_dls(folder, batch_size=8, img_size=24, aug='fastai').train.after_batch.fs)
    xb, _ = dls.valid.one_batch()
    x8 = dls.valid.xs[:8].float() / 255
    ref = normalize_tfm()(TensorImage(x8))
    assert xb.dtype == torch.float32 and type(xb) is TensorImage
    torch.testing.assert_close(xb.as_subclass(torch.Tensor), ref.as_subclass(torch.Tensor), atol=1e-5, rtol=0)
    dec = dls.valid.decode_batch((xb, _))[0][0]
    assert 0 <= dec.min() and dec.max() <= 1 and (dec - x8[0]).abs().max() < 1e-5

# --- cold start: the check writes each split's images into one array; full-size JPEGs decoded by torchvision ---

def test_cold_start_serves_the_checks_arrays(folder, kit_cache, monkeypatch):
    plans, real = [], fkdata._Decoded.plan
    monkeypatch.setattr(fkdata._Decoded, 'plan', lambda self, items: plans.append(self) or real(self, items))
    dls = get_dls(folder, batch_size=8, img_size=24, in_memory=True, cache=False, progress=False)
    (kept,) = plans
    assert [len(a) for a in kept.arrays] == [len(dls.train.xs), len(dls.valid.xs)]   # no bad files: one array per split
    for dl, arr in zip((dls.train, dls.valid), kept.arrays):
        assert np.shares_memory(dl.xs.numpy(), arr)    # served as written by the check: no copy of the image set
        assert_same_images(dl.xs, reference_images(dl))

def test_full_size_jpegs_decoded_by_torchvision(tmp_path, kit_cache, monkeypatch):
    data, calls, real = photos(tmp_path/'p'), [], fkdata.decode_jpeg
    monkeypatch.setattr(fkdata, 'decode_jpeg', lambda *a, **k: calls.append(1) or real(*a, **k))
    jpg = io.BytesIO(); Image.fromarray(np.random.default_rng(1).integers(0, 255, (100, 150, 3), dtype=np.uint8)).save(jpg, 'JPEG')
    (data/'a'/'cut.jpg').write_bytes(jpg.getvalue()[:-300])   # truncated, and small: decoded at full size
    full = sum(min(w // 64, h // 64) < 2 for w, h in (Image.open(f).size for f in data.rglob('*.jpg')))   # `draft` can't shrink
    dls = get_dls(data, img_size=64, batch_size=4, in_memory=True, cache=False, num_workers=0, max_bad_pct=None, progress=False)
    assert 1 < full < 17 and len(calls) == full    # every full-size JPEG, the truncated one too (torchvision refuses it)
    assert [(Path(p).name, r.split(':')[0]) for p, r in dls.data_report.bad] == [('cut.jpg', 'corrupt or truncated')]
    for dl in (dls.train, dls.valid): assert_same_images(dl.xs, reference_images(dl))   # PIL's pixels, decoded faster

def test_loading_images_leaves_torch_random_state_alone(folder, tmp_path, monkeypatch):
    """Decoding the images (no disk cache yet) and reading them from the cache draw no torch random numbers, so a seeded
    run starts from the same weights either way (a decoding DataLoader drew its seed from torch's generator)"""
    monkeypatch.setenv('FINETUNE_KIT_CACHE', str(tmp_path/'cache'))
    check_data(folder, progress=False)   # as `train`'s size check does: the checked files are cached, the images not yet
    expected = torch.Generator().manual_seed(0)
    expected = torch.rand(3, generator=expected).tolist()
    for how in ('decoded', 'from the disk cache'):
        torch.manual_seed(0)
        dls = get_dls(folder, img_size=16, batch_size=8, num_workers=0, cache=True, progress=False)
        assert dls.train.xs is not None and torch.rand(3).tolist() == expected, how
    assert list((tmp_path/'cache'/'images').glob('*.npy'))   # the second pass did read the cache
