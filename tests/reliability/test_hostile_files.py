"""Hostile files: decompression bombs, empty, truncated, mislabelled and unusual images; 100k files; CSV paths that leave
the data root; YAML with python tags; an edited model bundle. Each is refused or skipped with the file named, or loads right."""
import io, json, os, random, shutil, struct, time, tracemalloc, zlib
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from PIL import Image
from conftest import copy_sample
from finetune_kit.data import check_data, load_source, _open_squished
from .conftest import record_row

def _png_header(w:int, h:int) -> bytes:
    "A PNG that claims `w` x `h` pixels (a decompression bomb as PIL sees it on open)."
    chunk = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 1, 0, 0, 0, 0)) + chunk(b'IDAT', zlib.compress(b'\0' * 64)) + chunk(b'IEND', b'')

def _odd_images(d:Path) -> dict:
    "Unusual but valid images, each with the RGB colour it must load as."
    grad = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 64)
    Image.new('CMYK', (32, 32), (0, 255, 255, 0)).save(d/'cmyk.jpg', quality=95)           # red in CMYK
    Image.fromarray(grad).save(d/'sixteen.png')
    p = Image.new('P', (32, 32)); p.putpalette([0, 0, 255] * 256); p.save(d/'palette.png')  # blue palette
    Image.new('LA', (32, 32), (200, 255)).save(d/'la.png')
    Image.new('RGBA', (32, 32), (0, 255, 0, 255)).save(d/'rgba.png')
    Image.new('RGB', (32, 32), (0, 0, 255)).save(d/'really_png.jpg', format='PNG')         # wrong extension, fine content
    ex = Image.new('RGB', (48, 24), (255, 0, 0)); ex.paste((0, 0, 255), (0, 0, 24, 24))
    exif = Image.Exif(); exif[0x0112] = 6                                                  # rotate 90 degrees on display
    ex.save(d/'exif_rotated.jpg', exif=exif, quality=95)
    return {'cmyk.jpg': (255, 0, 0), 'palette.png': (0, 0, 255), 'la.png': (200, 200, 200), 'rgba.png': (0, 255, 0),
            'really_png.jpg': (0, 0, 255), 'sixteen.png': None, 'exif_rotated.jpg': None}

def test_hostile_images(tmp_path, zygote):
    root = copy_sample(tmp_path/'d', 12, 4, classes=('Bag', 'Sneaker'))
    bad_dir, odd_dir = root/'train'/'Bag', root/'train'/'Sneaker'
    (bad_dir/'bomb.png').write_bytes(_png_header(20000, 20000))
    (bad_dir/'empty.png').write_bytes(b'')
    good = next(bad_dir.glob('*.png')).read_bytes(); (bad_dir/'truncated.png').write_bytes(good[:len(good) // 2])
    (bad_dir/'text.png').write_text('not an image at all')
    colours = _odd_images(odd_dir)
    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS <= 2 ** 28   # PIL's limit is kept
    t = time.time(); rep = check_data(root, max_bad_pct=None, progress=False); took = time.time() - t
    bad = {Path(p).name: why for p, why in rep.bad}
    expect = {'bomb.png': 'decompression bomb', 'empty.png': '', 'truncated.png': '', 'text.png': 'not an image'}
    named = {n for n, w in expect.items() if n in bad and w in bad[n]}
    rc, log = zygote.cli('check-data', root)   # the CLI names each one too
    named_cli = {n for n in expect if n in log}
    # unusual images load as the right colours, and the same way in training and in `predict`
    from finetune_kit.inference import _read
    from finetune_kit.transforms import resize_tfm
    from fastai.vision.core import image2tensor
    wrong = []
    for name, rgb in colours.items():
        f = odd_dir/name
        tr = _open_squished(f, 32).float()
        pr = image2tensor(resize_tfm(32, 'squish')(_read(f), split_idx=1)).float()
        if (tr - pr).abs().max() > 1: wrong.append(f'{name}: train and predict differ')
        if rgb is not None and (tr.mean((1, 2)) - torch.tensor(rgb)).abs().max() > 8: wrong.append(f'{name}: {tr.mean((1, 2)).tolist()} not {rgb}')
    six = _open_squished(odd_dir/'sixteen.png', 32).float()
    white = float((six >= 254).float().mean())
    sixteen = f"a 0-65535 gradient comes out {float(six.min()):.0f}-{float(six.max()):.0f}, {white:.0%} white (scaled, not clipped)"
    tries = len(expect) + len(colours)
    record_row('hostile images (bomb, 0-byte, truncated, text, CMYK, 16-bit, P, LA, RGBA, wrong ext, EXIF)', tries,
               len(named & named_cli) + len(colours) - len(wrong), 0, 0, took,
               f'bad ones named by check_data and check-data; unusual ones load as in predict; EXIF orientation not applied '
               f'(the same in train and predict); 16-bit PNG: {sixteen}')
    assert named == set(expect) == named_cli and not wrong, (bad, log[-1500:], wrong)
    assert white < 0.05 and six.max() - six.min() > 200, sixteen  # 16-bit grey scaled to 8 bits, not clipped

N_FILES = 100_000

def test_100k_file_folder_scanned_within_memory(tmp_path):
    root = tmp_path/'big'
    for c in ('a', 'b'): (root/c).mkdir(parents=True)
    for i in range(N_FILES):
        os.close(os.open(root/('a', 'b')[i % 2]/f'{i:06d}.png', os.O_CREAT | os.O_WRONLY, 0o644))
    tracemalloc.start()
    t = time.time(); src = load_source(root); took = time.time() - t
    peak = tracemalloc.get_traced_memory()[1] / 2 ** 20; tracemalloc.stop()
    ok = len(src.items) == N_FILES and peak < 300  # the time is reported, not asserted (it depends on the machine's load)
    record_row('100k-file folder (listing + split)', 1, int(ok), 0, 0, None, f'{N_FILES} empty files listed in {took:.1f} s, peak {peak:.0f} MiB traced (bound 300)')
    assert ok, (len(src.items), peak, took)

def test_csv_paths_leaving_the_data_root(tmp_path):
    root = copy_sample(tmp_path/'d', 10, 3, classes=('Bag', 'Sneaker'))
    outside = tmp_path/'secret.png'; shutil.copy(next(root.rglob('*.png')), outside)
    rows = [(str(p.relative_to(root)), p.parent.name) for p in sorted(root.rglob('*.png'))]
    (root/'inside_link.png').symlink_to(root/rows[0][0])
    (root/'escape_link.png').symlink_to(outside)
    (root/'sub').mkdir(); (root/'sub'/'dir_link').symlink_to(tmp_path, target_is_directory=True)
    hostile = ['../secret.png', str(outside), 'escape_link.png', 'sub/dir_link/secret.png', 'Bag/../../secret.png', './../secret.png']
    pd.DataFrame(rows + [(h, 'Bag') for h in hostile] + [('inside_link.png', 'Bag')], columns=['fname', 'label']).to_csv(root/'labels.csv', index=False)
    t = time.time(); rep = check_data(root/'labels.csv', max_bad_pct=None, progress=False); took = time.time() - t
    refused = [p for p, why in rep.bad if 'escapes the data root' in why]
    named = [h for h in hostile if any(p.endswith(h.lstrip('./')) or p == h for p in refused)]
    kept_link = any(p.endswith('inside_link.png') for p in rep.items.path)
    with pytest.raises(ValueError, match='escapes the data root'): check_data(root/'labels.csv', progress=False)   # too many: refused, named
    record_row('CSV paths leaving the data root (../, absolute, symlinks)', len(hostile) + 1, len(named) + kept_link, 0, 0, took,
               'each refused with its path and "escapes the data root"; a symlink within the root is kept')
    assert len(named) == len(hostile) and len(refused) == len(hostile) and kept_link, (sorted(refused), named)

TAGS = ['!!python/object/apply:os.system ["touch {canary}"]', '!!python/object/new:os.system ["touch {canary}"]',
        '!!python/name:os.system', '!!python/object/apply:subprocess.check_output [["touch", "{canary}"]]']

def test_yaml_python_tags_refused(zygote, tmp_path):
    canary, results = tmp_path/'PWNED', []
    for i, tag in enumerate(TAGS):
        tag = tag.format(canary=canary)
        cfg = tmp_path/f'c{i}.yaml'; cfg.write_text(f'learning_rate: {tag}\nepochs: 1\n')
        sw = tmp_path/f's{i}.yaml'; sw.write_text(f'method: grid\nparameters:\n  learning_rate:\n    value: {tag}\n')
        for argv in (['train', '--config', cfg, '--out', tmp_path/f'r{i}'], ['sweep', sw, '--out', tmp_path/f'sw{i}', '--no_preflight']):
            t = time.time(); rc, log = zygote.cli(*argv)
            refused = rc not in (0, None) and 'python/' in log and not canary.exists() and not (tmp_path/f'r{i}').exists()
            one_line = rc == 2 and 'Traceback' not in log and log.count('finetune-kit: error') == 1
            results.append((argv[0], tag, refused, one_line, time.time() - t, log[-300:]))
    n_lines = sum(r[3] for r in results)
    record_row('YAML with python tags (config and sweep files)', len(results), sum(r[2] for r in results), 0, 0,
               max(r[4] for r in results) if n_lines == len(results) else None,
               f'refused by the safe loader, nothing executed; {n_lines}/{len(results)} as a one-line error' +
               ('' if n_lines == len(results) else ' (the others: a yaml ConstructorError traceback, exit 1)'))
    assert all(r[2] for r in results) and not canary.exists(), [r for r in results if not r[2]]
    assert n_lines == len(results), [r for r in results if not r[3]]

class _Boom:
    def __reduce__(self): return (os.system, (f'touch {os.environ.get("RELIABILITY_CANARY", "/tmp/x")}',))

def _edits(model:Path, rng:random.Random) -> list:
    "(name, function editing a copy of the bundle folder) pairs."
    def js(f):
        def edit(d):
            j = json.loads((d/'model.json').read_text()); f(j); (d/'model.json').write_text(json.dumps(j))
        return edit
    def raw(name, f): return lambda d: (d/name).write_bytes(f((d/name).read_bytes()))
    size = (model/'model.safetensors').stat().st_size
    cuts = sorted(rng.sample(range(1, size), 6))
    hdr = lambda b: b[:8] + b[8:200].replace(b'"shape":[', b'"shape":[2,', 1) + b[200:]
    return [('json: half written', raw('model.json', lambda b: b[:len(b) // 2])),
            ('json: not an object', lambda d: (d/'model.json').write_text('[1, 2]')),
            ('json: num_classes', js(lambda j: j.update(num_classes=j['num_classes'] + 1))),
            ('json: vocab', js(lambda j: j.update(vocab=j['vocab'][:-1]))),
            ('json: arch', js(lambda j: j.update(arch='resnet18'))),
            ('json: unknown arch', js(lambda j: j.update(arch='no_such_model'))),
            ('json: pool', js(lambda j: j.update(pool='median'))),
            ('json: num_classes text', js(lambda j: j.update(num_classes='three'))),
            ('json: missing key', js(lambda j: j.pop('arch'))),
            *[(f'tensors: cut at {c} of {size} bytes', raw('model.safetensors', lambda b, c=c: b[:c])) for c in cuts],
            ('tensors: header length', raw('model.safetensors', lambda b: struct.pack('<Q', struct.unpack('<Q', b[:8])[0] + 7) + b[8:])),
            ('tensors: a shape', raw('model.safetensors', hdr)),
            ('tensors: garbage', raw('model.safetensors', lambda b: bytes(rng.getrandbits(8) for _ in range(len(b) // 50)))),
            ('tensors: a pickle', lambda d: torch.save({'x': _Boom()}, d/'model.safetensors')),
            ('tensors: missing', lambda d: (d/'model.safetensors').unlink())]

def test_edited_model_bundle_refused(zygote, tmp_path, monkeypatch):
    from finetune_kit.inference import load_bundle
    data = copy_sample(tmp_path/'d', 8, 3)
    rc, log = zygote.cli('train', '--data', data, '--out', tmp_path/'run', '--model_name', 'test_convnext', '--pretrained', 'false',
                         '--img_size', '32', '--batch_size', '8', '--epochs', '1', '--num_workers', '0')
    assert rc == 0, log[-2000:]
    canary = tmp_path/'PWNED'; monkeypatch.setenv('RELIABILITY_CANARY', str(canary))
    model, res = tmp_path/'run'/'model', []
    for i, (name, edit) in enumerate(_edits(model, random.Random(15))):
        d = tmp_path/f'e{i}'; shutil.copytree(model, d); edit(d)
        t = time.time()
        try: load_bundle(d); res.append((name, False, 'loaded', 0))
        except (ValueError, FileNotFoundError) as e:
            f = 'model.json' if name.startswith('json') else 'model.safetensors'
            msg = str(e)
            res.append((name, f in msg and str(d) in msg and '\n' not in msg, msg[:160], time.time() - t))
    rc, log = zygote.cli('predict', '--model-dir', tmp_path/'e0', next(data.rglob('*.png')))   # the CLI: one line, exit 2
    cli_ok = rc == 2 and 'model.json' in log and 'Traceback' not in log
    record_row('edited model bundle (model.json, safetensors)', len(res) + 1, sum(r[1] for r in res) + cli_ok, 0, 0, max(r[3] for r in res),
               'refused with the file named; a pickle in place of the tensors is never unpickled')
    assert all(r[1] for r in res) and cli_ok and not canary.exists(), ([r for r in res if not r[1]], log[-500:])
