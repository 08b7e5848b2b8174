"""The docs site: `make docs` builds it without Quarto, and every page opens in headless Chromium.

The site is built into a temporary folder with tools/build_docs.py (as `make docs` does, from the committed
nbs/sidebar.yml), served on localhost, and each page is opened with every request off this machine blocked: a broken
internal link, an image that does not load, a page that renders empty or an asset fetched from a CDN fails the test.
Screenshots of the home page and of the first tutorial are saved in tests/_out/docs/ for a person to look at.
"""
import functools, http.server, os, shutil, subprocess, sys, threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest, yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT/'tests'/'_out'/'docs'
sys.path.insert(0, str(ROOT/'tools'))
import build_docs  # noqa: E402  (tools/ is not a package)

CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync']


class _Refs(HTMLParser):
    "The links, resources and element ids of one HTML page."
    def __init__(self):
        super().__init__()
        self.links, self.resources, self.ids = [], [], set()
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get('id'): self.ids.add(a['id'])
        if tag == 'a' and a.get('href'): self.links.append(a['href'])
        if tag in ('img', 'script', 'iframe', 'source') and a.get('src'): self.resources.append(a['src'])
        if tag == 'link' and a.get('href'): self.resources.append(a['href'])


@functools.cache
def _refs(path: Path) -> _Refs:
    p = _Refs()
    p.feed(path.read_text(encoding='utf-8'))
    return p


def _pages(site: Path) -> list[Path]:
    "Every HTML page of the site but the 404 page (which mkdocs writes for a web server's root)."
    return sorted(p for p in site.rglob('*.html') if p.name != '404.html')


def _internal(page: Path, site: Path, url: str):
    "The file and anchor `url` points to from `page`, or None for an external URL or a special link."
    parts = urlsplit(url)
    if parts.scheme or url.startswith(('//', 'data:', 'mailto:', 'javascript:')): return None
    target = (page.parent/unquote(parts.path)).resolve() if parts.path else page
    if target.is_dir(): target = target/'index.html'
    return target, parts.fragment


# ---------- the configuration Quarto and nbdev read ----------

def test_quarto_config():
    "nbdev 3 reads nbs/_quarto.yml: it is the top-level _quarto.yml, with a navbar, the sidebar file and a repo link."
    top, nbs = ROOT/'_quarto.yml', ROOT/'nbs'/'_quarto.yml'
    assert nbs.exists() and nbs.read_text() == top.read_text()
    cfg = yaml.safe_load(top.read_text())
    assert cfg['project']['type'] == 'website' and 'sidebar.yml' in cfg['metadata-files']
    site = build_docs.site_config(ROOT)
    assert site['title'] and site['repo_url'].startswith('https://github.com/')
    assert any(o['href'] == site['repo_url'] for o in site['links'])


def test_sidebar_lists_the_notebooks():
    "nbs/sidebar.yml is what `make docs` writes from the notebooks present: the API and Tutorials sections."
    committed = yaml.safe_load((ROOT/'nbs'/'sidebar.yml').read_text())
    assert committed == build_docs.sidebar_contents(ROOT/'nbs'), 'run `make docs` and commit nbs/sidebar.yml'


def test_sidebar_sections(tmp_path):
    "Module notebooks go under API and walkthroughs under Tutorials; the home page comes first."
    for f in ['index.ipynb', '01_data.ipynb', '00_datasets.ipynb', 'tutorials/02_own.ipynb', 'tutorials/01_cpu.ipynb',
              '_scratch.ipynb']:
        (tmp_path/f).parent.mkdir(exist_ok=True)
        (tmp_path/f).write_text('{}')
    assert build_docs.sidebar_contents(tmp_path)['website']['sidebar']['contents'] == [
        'index.ipynb', {'section': 'API', 'contents': ['00_datasets.ipynb', '01_data.ipynb']},
        {'section': 'Tutorials', 'contents': ['tutorials/01_cpu.ipynb', 'tutorials/02_own.ipynb']}]


def test_relink():
    "Links to notebooks and to the hosted site point at the built pages."
    pages = {'00_datasets.ipynb': 'datasets.ipynb', 'tutorials/01_cpu.ipynb': 'tutorials/cpu.ipynb'}
    url = 'https://finetune-kit.github.io/finetune_kit/'
    relink = functools.partial(build_docs._relink, page='tutorials/cpu.ipynb', src='tutorials/01_cpu.ipynb',
                               pages=pages, site_url=url)
    assert relink('see [data](../00_datasets.ipynb#load)') == 'see [data](../datasets.html#load)'
    assert relink(f'[`cache_dir`]({url}datasets.html#cache_dir)') == '[`cache_dir`](../datasets.html#cache_dir)'
    assert relink('<a href="https://fast.ai">x</a> ![](img/a.png)') == '<a href="https://fast.ai">x</a> ![](img/a.png)'


def test_adapt_nb():
    "A processed notebook's Quarto parts become what nbconvert shows: title, hidden inputs, callouts, no widget CDN."
    code = lambda src, outs=(): {'cell_type': 'code', 'metadata': {'execution': {'total': 0.1}}, 'source': src,
                                 'outputs': list(outs), 'execution_count': 1}
    nb = {'metadata': {'widgets': {'application/vnd.jupyter.widget-state+json': {}}}, 'cells': [
        {'cell_type': 'raw', 'metadata': {}, 'source': '---\ntitle: Train\ndescription: One config.\noutput-file: train.html\n---\n'},
        {'cell_type': 'markdown', 'metadata': {}, 'source': '<!-- WARNING: THIS FILE WAS AUTOGENERATED! DO NOT EDIT! -->'},
        {'cell_type': 'markdown', 'metadata': {}, 'source': '::: {.callout-note}\nSee [data](01_data.ipynb).\n:::'},
        code('#| echo: false\n#| output: asis\nshow_doc(train)', [{'output_type': 'display_data', 'metadata': {},
             'data': {'text/markdown': '### train\n'}}]),
        code('#| include: false\nx = 1'), code('#| output: false\n#| slow\ntrain(cfg)', [{'output_type': 'stream'}])]}
    pages = {'01_data.ipynb': 'data.ipynb', '06_train.ipynb': 'train.ipynb'}
    cells = build_docs.adapt_nb(nb, 'train.ipynb', '06_train.ipynb', pages, '')['cells']
    assert [c['source'] for c in cells] == ['# Train\n\n> One config.', '> **Note**\n>\n> See [data](data.html).',
                                            'show_doc(train)', 'train(cfg)']
    assert cells[2]['metadata'] == {'tags': ['remove_input']} and cells[3]['outputs'] == [] and 'widgets' not in nb['metadata']


# ---------- the built site ----------

@pytest.fixture(scope='module')
def site(tmp_path_factory) -> Path:
    "The site, built as `make docs` builds it (nbs/sidebar.yml as committed) into a temporary folder."
    if prebuilt := os.environ.get('FINETUNE_KIT_DOCS_SITE'): return Path(prebuilt)  # a site built already, as is
    dest = tmp_path_factory.mktemp('docs')/'_docs'
    env = {**os.environ, 'MPLBACKEND': 'Agg', 'WANDB_MODE': 'offline', 'WANDB_SILENT': 'true'}
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'build_docs.py'), '--dest', str(dest), '--no-write-sidebar'],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f'tools/build_docs.py failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}'
    return dest


def test_every_page_is_in_the_nav(site):
    "Each notebook of the sidebar is a page, reachable by following links from the home page."
    pages, seen, todo = set(_pages(site)), set(), [site/'index.html']
    while todo:
        page = todo.pop()
        if page in seen or page not in pages: continue
        seen.add(page)
        todo += [t[0] for u in _refs(page).links if (t := _internal(page, site, u))]
    assert pages - seen == set(), f'pages no link leads to: {sorted(p.relative_to(site) for p in pages - seen)}'
    n_notebooks = len([p for p in (ROOT/'nbs').rglob('*.ipynb') if not p.name.startswith(('_', '.'))
                       and '.ipynb_checkpoints' not in p.parts])
    assert len(pages) >= n_notebooks


def test_internal_links_and_assets(site):
    "Every internal link and anchor resolves; scripts, styles and images are files of the site, none from a CDN."
    broken = []
    for page in _pages(site):
        refs = _refs(page)
        for url in refs.links + refs.resources:
            t = _internal(page, site, url)
            if t is None:
                if url in refs.resources and urlsplit(url).scheme in ('http', 'https') or url.startswith('//'):
                    broken.append(f'{page.relative_to(site)}: loads {url} from the network')
                continue
            target, anchor = t
            if not target.exists(): broken.append(f'{page.relative_to(site)}: {url} (no such file)')
            elif anchor and target.suffix == '.html' and anchor not in _refs(target).ids:
                broken.append(f'{page.relative_to(site)}: {url} (no #{anchor} there)')
    assert not broken, '\n'.join(broken)


def test_site_is_only_the_site(site):
    "No run folders, checkpoints, weights, data or caches the notebooks wrote: the site is the pages and their assets."
    files = [p for p in site.rglob('*') if p.is_file()]
    heavy = [p.relative_to(site) for p in files if p.suffix in ('.pth', '.pt', '.safetensors', '.db', '.npz')
             or 'checkpoint' in p.parts or 'runs' in p.parts or 'wandb' in p.parts]
    assert heavy == [], f'{len(heavy)} files that are not the site, e.g. {heavy[:5]}'
    assert sum(p.stat().st_size for p in files) < 40 * 2**20


def test_home_page_subtitle_is_whole(site):
    "The home page's one-line description is the whole sentence (nbdev reads only the first `>` line)."
    import json
    nb = json.loads((ROOT/'nbs'/'index.ipynb').read_text())
    quote = [l for l in ''.join(nb['cells'][0]['source']).splitlines() if l.startswith('>')]
    assert len(quote) == 1 and quote[0].rstrip().endswith('.'), quote
    import html, re
    text = ' '.join(html.unescape(re.sub(r'<[^>]+>', ' ', (site/'index.html').read_text())).split())
    assert quote[0][2:].strip() in text


@pytest.fixture(scope='module')
def chromium() -> str:
    "Debian's chromium (installed here when missing and we are root), or a Chrome already on PATH."
    names = [os.environ.get('CHROMIUM', ''), 'chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable']
    found = next((p for n in names if n and (p := shutil.which(n))), None)
    if not found and os.geteuid() == 0 and shutil.which('apt-get'):
        subprocess.run('apt-get install -y -qq chromium || (apt-get update -qq && apt-get install -y -qq chromium)',
                       shell=True, capture_output=True, timeout=900)
        found = shutil.which('chromium')
    if not found: pytest.fail('no Chromium: `apt-get install -y chromium` (Debian), or set CHROMIUM=/path/to/chrome')
    return found


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass


@pytest.fixture(scope='module')
def served(site):
    "The site on a local web server, as GitHub Pages serves it."
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_QuietHandler, directory=str(site)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_address[1]}/'
    srv.shutdown()


_CHECK_PAGE = """async () => {
  const imgs = [...document.images];
  imgs.forEach(i => { i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));
  const art = document.querySelector('article') || document.body;
  return {broken_images: imgs.filter(i => !(i.naturalWidth > 0)).map(i => i.getAttribute('src').slice(0, 80)),
          n_images: imgs.length, text: art.innerText.trim().length, h1: !!art.querySelector('h1'),
          nav: [...document.querySelectorAll('.md-nav__link')].map(a => a.innerText.trim())};
}"""


def _first_tutorial(site: Path) -> Path | None:
    "The built page of the first notebook in the sidebar's Tutorials section (nbdev's page name for it)."
    from nbdev.config import nbpath2html
    contents = build_docs.site_config(ROOT)['sidebar']
    tuts = next((s['contents'] for s in contents if isinstance(s, dict) and s.get('section') == 'Tutorials'), [])
    return site/nbpath2html(tuts[0]) if tuts else None


def test_pages_render_in_chromium(site, served, chromium):
    "Each page loads with no request off this machine, no failed request or script error, its images shown, text in it."
    from playwright.sync_api import sync_playwright
    OUT.mkdir(parents=True, exist_ok=True)
    problems, shots = [], {site/'index.html': OUT/'home.png'}
    if tut := _first_tutorial(site): shots[tut] = OUT/'tutorial.png'
    sections = [s['section'] for s in build_docs.site_config(ROOT)['sidebar'] if isinstance(s, dict) and 'section' in s]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={'width': 1280, 'height': 900})
        events = []
        def _route(route):
            if route.request.url.startswith(served): return route.continue_()
            events.append(f'requested {route.request.url[:100]} (off this machine)')
            route.abort()
        page.route('**/*', _route)
        page.on('pageerror', lambda e: events.append(f'script error: {e}'))
        page.on('requestfailed', lambda r: r.url.startswith(served) and 'ERR_ABORTED' not in (r.failure or '')
                and events.append(f'failed: {r.url} {r.failure}'))
        page.on('response', lambda r: r.status >= 400 and events.append(f'HTTP {r.status}: {r.url}'))
        for p in _pages(site):
            name, events[:] = p.relative_to(site).as_posix(), []
            page.goto(urljoin(served, name), wait_until='networkidle')
            res = page.evaluate(_CHECK_PAGE)
            problems += [f'{name}: {e}' for e in events]
            problems += [f'{name}: image not shown: {s}' for s in res['broken_images']]
            if res['text'] < 40 or not res['h1']: problems.append(f'{name}: renders empty ({res["text"]} characters)')
            if missing := [s for s in sections if s not in res['nav']]: problems.append(f'{name}: nav lacks {missing}')
            if p in shots:
                h = page.evaluate('document.documentElement.scrollHeight')
                clip = {'x': 0, 'y': 0, 'width': 1280, 'height': min(h, 5000)}
                page.screenshot(path=str(shots[p]), full_page=True, clip=clip)
        browser.close()
    assert not problems, '\n'.join(problems)
    assert all(s.exists() and s.stat().st_size > 10_000 for s in shots.values()), shots
