"Predicting from a bundle: unreadable files become error rows, everything else is predicted as before."
import io, shutil
from pathlib import Path
import pytest
from PIL import Image
from finetune_kit.training import train
from finetune_kit.inference import predict
from finetune_kit.datasets import sample_path
from conftest import copy_sample

TINY = dict(img_size=32, batch_size=16, epochs=1, learning_rate=3e-3)

@pytest.fixture(scope='module')
def bundle(tmp_path_factory):
    "A model bundle from one tiny epoch on real Fashion-MNIST images."
    tiny = copy_sample(tmp_path_factory.mktemp('tiny'), 7, 3)
    return train(data=str(tiny), out=str(tmp_path_factory.mktemp('run')/'run'), verbose=False, **TINY).out/'model'

@pytest.fixture
def images(tmp_path):
    "Three real images from the bundled sample, a truncated PNG, a truncated JPEG and a text file named x.jpg."
    good = sorted((sample_path()/'valid'/'Sneaker').glob('*.png'))[:3]
    png = good[0].read_bytes()
    (tmp_path/'half.png').write_bytes(png[:len(png) // 2])
    buf = io.BytesIO(); Image.open(good[1]).convert('RGB').resize((96, 96)).save(buf, 'JPEG')
    (tmp_path/'half.jpg').write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
    (tmp_path/'x.jpg').write_text('not an image at all\n')
    return good, [tmp_path/'half.png', tmp_path/'x.jpg', tmp_path/'half.jpg']

def test_predict_reports_unreadable_files_and_predicts_the_rest(bundle, images):
    "One row per file, in order; a bad file is an error row and never costs its batch's good images."
    (g0, g1, g2), (png, txt, jpg) = images
    items = [g0, g1, png, txt, g2, jpg]  # batches of 2: good+good, bad+bad, good+bad
    rows = predict(bundle, items, batch_size=2)
    assert [r['path'] for r in rows] == list(map(str, items))
    bad = {r['path']: r['error'] for r in rows if 'error' in r}
    assert set(bad) == {str(png), str(txt), str(jpg)}
    for r in rows:
        if 'error' in r: assert set(r) == {'path', 'error'} and r['error'] and '\n' not in r['error'], r
    assert 'not an image' in bad[str(txt)] and 'truncated' in bad[str(png)] + bad[str(jpg)]
    alone = predict(bundle, [g0, g1, g2])
    good = [r for r in rows if 'error' not in r]  # the same predictions (batch composition moves the 6th decimal)
    assert [(r['path'], r['label']) for r in good] == [(r['path'], r['label']) for r in alone]
    assert all(abs(a['probability'] - b['probability']) < 1e-4 for a, b in zip(good, alone))
    assert all(r['label'] == r['top_k'][0]['label'] for r in alone)

def test_predict_folder_with_a_bad_file(bundle, images, tmp_path):
    (g0, g1, _), (_, txt, _) = images
    d = tmp_path/'folder'; d.mkdir()
    for f in (g0, g1, txt): shutil.copy(f, d/f.name)
    rows = predict(bundle, d)
    assert len(rows) == 3 and [('error' in r) for r in rows] == [False, False, True]

def test_predict_still_raises_on_a_missing_path_or_a_non_bundle(bundle, images, tmp_path):
    with pytest.raises(FileNotFoundError, match='no/such.png'): predict(bundle, [images[0][0], '/no/such.png'])
    with pytest.raises(FileNotFoundError, match='not a model bundle'): predict(tmp_path, images[0])
