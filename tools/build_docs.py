"""Build the docs site without Quarto: `make docs` writes the static site to _docs/.

`nbdev-docs` renders the Quarto site from nbdev's processed notebooks (_proc/). Quarto cannot be installed
everywhere, so this tool takes the same processed notebooks (`nbdev.serve.proc_nbs`: `show_doc` tables in, exported
cells out, committed outputs kept, nothing re-executed) and renders them with mkdocs-material + mkdocs-jupyter.
The navigation is read from the files Quarto uses (_quarto.yml, nbs/sidebar.yml), so it is written once.

    python tools/build_docs.py                  # sidebar.yml from the notebooks present, then the site in _docs/
    python tools/build_docs.py --dest DIR --no-write-sidebar   # what tests/test_docs.py runs
    python tools/build_docs.py --sidebar-only   # only rewrite nbs/sidebar.yml
"""
import argparse, json, os, posixpath, re, shutil, sys, tempfile, warnings
from html.parser import HTMLParser
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
SECTIONS = {'API': '*.ipynb', 'Tutorials': 'tutorials/*.ipynb'}  # sidebar section -> notebooks under nbs/


def _nb_files(nbs: Path, pattern: str) -> list[str]:
    "Notebooks under `nbs` matching `pattern`, as sorted posix paths relative to `nbs` (index and _/. files left out)."
    return sorted(p.relative_to(nbs).as_posix() for p in nbs.glob(pattern)
                  if p.name != 'index.ipynb' and not p.name.startswith(('_', '.')))


def sidebar_contents(nbs: Path = NBS) -> dict:
    "The sidebar.yml Quarto reads: the home page, then one section per entry of `SECTIONS` that has notebooks."
    contents = ['index.ipynb'] if (nbs/'index.ipynb').exists() else []
    for section, pattern in SECTIONS.items():
        if files := _nb_files(nbs, pattern): contents.append({'section': section, 'contents': files})
    return {'website': {'sidebar': {'contents': contents}}}


def write_sidebar(nbs: Path = NBS) -> bool:
    "Rewrite nbs/sidebar.yml from the notebooks present; True when it changed."
    text = '# Written by tools/build_docs.py (`make docs`) from the notebooks in nbs/: do not edit.\n'
    text += yaml.safe_dump(sidebar_contents(nbs), sort_keys=False)
    p = nbs/'sidebar.yml'
    if p.exists() and p.read_text() == text: return False
    p.write_text(text)
    return True


def site_config(root: Path = ROOT) -> dict:
    "Title, description, repo link and sidebar of the site, read from _quarto.yml and nbs/sidebar.yml."
    quarto = yaml.safe_load((root/'_quarto.yml').read_text())['website']
    sidebar = yaml.safe_load((root/'nbs'/'sidebar.yml').read_text())['website']['sidebar']['contents']
    links = [o for o in quarto.get('navbar', {}).get('right', []) if str(o.get('href', '')).startswith('http')]
    return dict(title=quarto['title'], description=quarto.get('description', ''), repo_url=quarto.get('repo-url', ''),
                links=links, sidebar=sidebar)


def process_notebooks(nbs: Path = NBS, n_workers: int = 2) -> Path:
    "nbdev's processing for docs into _proc/ (nbdev's cache): what `nbdev-docs` hands to Quarto."
    from nbdev.serve import proc_nbs
    os.chdir(nbs.parent)  # nbdev runs the show_doc cells from the project root, as nbdev-docs does
    try: return Path(proc_nbs(str(nbs), n_workers=n_workers))
    except Exception as e:  # nbdev-docs fails the same way: it runs imports, exported cells and show_doc cells
        sys.exit(f"{e}\n\nnbdev's docs processing runs every cell that imports, exports or calls show_doc: "
                 "a cell that imports and also does work must be split (imports go in the imports cell).")


# ---------- adapting a processed notebook (Quarto markdown and directives) for mkdocs-jupyter ----------

def _frontmatter(nb: dict) -> dict:
    "The YAML frontmatter nbdev puts in the first raw cell (title, description, output-file)."
    cell = nb['cells'][0] if nb['cells'] else {}
    src = ''.join(cell.get('source', ''))
    if cell.get('cell_type') != 'raw' or not src.startswith('---'): return {}
    return yaml.safe_load(src.strip().strip('-')) or {}


def _title_cell(fm: dict, fallback: str) -> dict:
    "A markdown cell with the page's H1 and its one-line description, as Quarto shows them."
    src = f"# {fm.get('title') or fallback}"
    if fm.get('description'): src += f"\n\n> {' '.join(str(fm['description']).split())}"
    return {'cell_type': 'markdown', 'id': 'page-title', 'metadata': {}, 'source': src}


_re_directive = re.compile(r'^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')

def _directives(src: str) -> tuple[dict, str]:
    "The `#| key: value` (or `#| flag`) lines at the top of a code cell, and the source without them."
    lines, d = src.splitlines(), {}
    while lines and (m := _re_directive.match(lines[0])):
        d[m.group(1)] = m.group(2).strip('"\'').lower()
        lines.pop(0)
    return d, '\n'.join(lines)


_re_callout = re.compile(r'^:::+\s*\{\.callout-(\w+)[^}]*\}\s*$')

def _callouts(md: str) -> str:
    "Quarto callouts (`::: {.callout-note}`) as quoted paragraphs; other fenced-div markers dropped."
    out, quoting = [], False
    for line in md.splitlines():
        if m := _re_callout.match(line.strip()):
            out.append(f'> **{m.group(1).capitalize()}**'); out.append('>'); quoting = True
        elif line.strip().startswith(':::'): quoting = False
        else: out.append(f'> {line}' if quoting else line)
    return '\n'.join(out)


def _heading_id(anchor: str) -> str:
    "The id mkdocs-jupyter gives the heading Quarto ids `anchor` (`trainconfig.from_dict` -> `trainconfigfrom_dict`)."
    from mkdocs_jupyter.utils import slugify
    from nbconvert.filters.strings import _convert_header_id
    return _convert_header_id(slugify(anchor))


_re_target = re.compile(r'(\]\(<?|href=["\'])([^)"\'\s>]+)')

def _relink(text: str, page: str, src: str, pages: dict, site_url: str) -> str:
    "Point links at the built pages: `x.ipynb` relative to the source notebook, and the hosted site's URLs."
    def _local(target):
        path, _, anchor = target.partition('#')
        if site_url and path.startswith(site_url): path = path[len(site_url):].lstrip('/') or 'index.html'
        elif path.endswith('.ipynb') and '://' not in path:
            rel = posixpath.normpath(posixpath.join(posixpath.dirname(src), path))
            if rel not in pages: return target
            path = pages[rel]
        else: return target
        href = posixpath.relpath(path.removesuffix('.ipynb') + ('.html' if path.endswith('.ipynb') else ''),
                                 posixpath.dirname(page) or '.')
        return href + ('#' + _heading_id(anchor) if anchor else '')
    return _re_target.sub(lambda m: m.group(1) + _local(m.group(2)), text)


def _text(x) -> str: return ''.join(x) if isinstance(x, list) else x


def adapt_nb(nb: dict, page: str, src: str, pages: dict, site_url: str) -> dict:
    "Turn nbdev's Quarto-flavoured notebook into one nbconvert renders the same way (title, hidden inputs, links)."
    fm = _frontmatter(nb)
    cells = [_title_cell(fm, Path(src).stem)]
    for cell in nb['cells'][1 if fm else 0:]:
        src_text = _text(cell.get('source', ''))
        if cell['cell_type'] == 'raw' or src_text.startswith('<!-- WARNING: THIS FILE WAS AUTOGENERATED'): continue
        cell['metadata'] = {}  # execution timings and the like: not part of the page (and not always valid nbformat)
        if cell['cell_type'] == 'markdown':
            cell['source'] = _relink(_callouts(src_text), page, src, pages, site_url)
        elif cell['cell_type'] == 'code':
            d, cell['source'] = _directives(src_text)
            if d.get('include') == 'false': continue
            if d.get('output') == 'false': cell['outputs'] = []
            if d.get('echo') == 'false': cell['metadata']['tags'] = ['remove_input']
            for o in cell.get('outputs', []):
                data = o.get('data', {})
                for mime in ('text/markdown', 'text/html'):
                    if mime in data: data[mime] = _relink(_text(data[mime]), page, src, pages, site_url)
        cells.append(cell)
    nb['cells'] = cells
    nb['metadata'].pop('widgets', None)  # widget state would load the widget manager from unpkg.com at view time
    return nb


def _tracked(nbs: Path) -> set:
    "Files under `nbs` that git tracks, relative to it: the only non-notebook files a page may use."
    import subprocess
    r = subprocess.run(['git', 'ls-files', '-z', '--', '.'], cwd=nbs, capture_output=True, text=True)
    return set(r.stdout.split('\0')) - {''} if r.returncode == 0 else set()


def stage(proc: Path, dest: Path, site_url: str) -> dict:
    "Copy _proc/ into mkdocs' docs folder, each notebook under its Quarto output name; returns source -> page."
    nbs = {p.relative_to(proc).as_posix(): json.loads(p.read_text()) for p in sorted(proc.rglob('*.ipynb'))}
    pages = {}
    for src, nb in nbs.items():
        out = _frontmatter(nb).get('output-file') or Path(src).name
        pages[src] = posixpath.join(posixpath.dirname(src), Path(out).with_suffix('.ipynb').as_posix())
    tracked = _tracked(NBS)
    for p in proc.rglob('*'):
        rel = p.relative_to(proc).as_posix()
        if p.is_dir() or rel in nbs or p.name in ('_quarto.yml', 'sidebar.yml', 'nbdev.yml'): continue
        if rel not in tracked: continue  # run folders, sweeps, checkpoints and caches the notebooks wrote: not the site
        (dest/rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dest/rel)
    for src, nb in nbs.items():
        (dest/pages[src]).parent.mkdir(parents=True, exist_ok=True)
        (dest/pages[src]).write_text(json.dumps(adapt_nb(nb, pages[src], src, pages, site_url), indent=1))
    return pages


# ---------- the mkdocs site ----------

def _nb_title(path: Path) -> str:
    "The H1 of a staged notebook (its first cell, written by `_title_cell`)."
    return json.loads(path.read_text())['cells'][0]['source'].splitlines()[0].lstrip('# ').strip()


def mkdocs_nav(sidebar: list, pages: dict, docs: Path) -> list:
    "mkdocs' `nav` from Quarto's sidebar contents: notebooks become pages, sections stay sections."
    nav = []
    for item in sidebar:
        if isinstance(item, str):
            if item not in pages:
                raise FileNotFoundError(f"nbs/sidebar.yml lists {item}, which is not in nbs/: run `make docs` to rewrite it")
            nav.append({'Home' if item == 'index.ipynb' else _nb_title(docs/pages[item]): pages[item]})
        elif 'section' in item:
            nav.append({item['section']: mkdocs_nav(item.get('contents', []), pages, docs)})
        elif 'href' in item:
            nav.append({item.get('text', item['href']): item['href']})
    return nav


class _Headings(HTMLParser):
    "The h1-h3 headings of a rendered page: (level, id, text)."
    def __init__(self):
        super().__init__()
        self.found, self._open = [], None
    def handle_starttag(self, tag, attrs):
        if tag in ('h1', 'h2', 'h3') and (hid := dict(attrs).get('id')): self._open = (int(tag[1]), hid, [])
    def handle_data(self, data):
        if self._open: self._open[2].append(data)
    def handle_endtag(self, tag):
        if self._open and tag == f'h{self._open[0]}':
            level, hid, text = self._open
            self.found.append((level, hid, ''.join(text).replace('\u00b6', '').strip()))
            self._open = None


def on_page_content(html, page, config, files):
    "mkdocs hook: the table of contents from the headings as rendered, so each entry links to an id on the page."
    from mkdocs.structure.toc import get_toc
    p, root = _Headings(), {'level': 0, 'children': []}
    p.feed(html)
    stack = [root]
    for level, hid, name in p.found:
        while stack[-1]['level'] >= level: stack.pop()
        stack[-1]['children'].append(tok := {'level': level, 'id': hid, 'name': name, 'children': []})
        stack.append(tok)
    page.toc = get_toc(root['children'])
    return html


def mkdocs_config(site: dict, docs: Path, dest: Path, nav: list) -> dict:
    "The mkdocs-material + mkdocs-jupyter configuration: nothing loaded from a CDN when the site is viewed."
    social = [{'icon': 'fontawesome/brands/github', 'link': o['href'], 'name': o.get('text', o['href'])}
              for o in site['links']]
    return {
        'site_name': site['title'], 'site_description': site['description'],
        'docs_dir': str(docs), 'site_dir': str(dest), 'use_directory_urls': False, 'strict': True,
        # `repo_url` would make the theme call api.github.com on every view: the repo link is a nav entry instead
        'nav': nav + [{o.get('text', 'Source'): o['href']} for o in site['links']],
        'theme': {'name': 'material', 'font': False,  # no Google Fonts: the system fonts
                  'features': ['navigation.sections', 'navigation.footer', 'navigation.top', 'toc.follow',
                               'content.code.copy', 'search.highlight'],
                  'palette': {'primary': 'indigo', 'accent': 'indigo'}, 'icon': {'logo': 'material/image-filter-center-focus'}},
        'extra': {'generator': False, 'social': social}, 'extra_css': ['assets/wide.css'],
        'hooks': [__file__],  # `on_page_content` above
        'plugins': ['search', {'mkdocs-jupyter': {
            'include': ['*.ipynb'], 'execute': False, 'include_source': False, 'include_requirejs': False, 'custom_mathjax_url': '',
            'ignore_h1_titles': True,  # nav titles from the sidebar ('Home'); the H1 stays in the page
            'no_prompt': True, 'cache': False,
            'remove_tag_config': {'remove_input_tags': ['remove_input']}}}],
    }


def _fallback_index(docs: Path, site: dict):
    "A home page while nbs/index.ipynb does not exist yet."
    warnings.warn('nbs/index.ipynb not found: the home page is a placeholder')
    (docs/'index.md').write_text(f"# {site['title']}\n\n{site['description']}\n")
    return [{'Home': 'index.md'}]


def build(dest: Path = ROOT/'_docs', write: bool = True, n_workers: int = 2) -> Path:
    "Process the notebooks and render them into a static site in `dest`."
    from mkdocs.commands.build import build as mkdocs_build
    from mkdocs.config import load_config
    from nbdev.config import get_config
    if write and write_sidebar(): print('nbs/sidebar.yml updated from the notebooks in nbs/: commit it')
    site, cfg = site_config(), get_config(str(NBS))
    proc = process_notebooks(NBS, n_workers)
    with tempfile.TemporaryDirectory(prefix='build_docs_') as tmp:
        docs = Path(tmp)/'docs'
        docs.mkdir()
        pages = stage(proc, docs, f"{cfg.doc_host}{cfg.doc_baseurl}".rstrip('/') + '/')
        nav = mkdocs_nav(site['sidebar'], pages, docs)
        if 'index.ipynb' not in pages: nav = _fallback_index(docs, site) + nav
        (docs/'assets').mkdir(exist_ok=True)
        (docs/'assets'/'wide.css').write_text(  # room for code and plots; signatures scroll rather than break words
            '.md-grid { max-width: 1600px; }\n'
            '.jupyter-wrapper .jp-RenderedMarkdown pre { white-space: pre !important; word-break: normal !important; '
            'overflow-wrap: normal !important; overflow-x: auto; }\n')
        yml = Path(tmp)/'mkdocs.yml'
        yml.write_text(yaml.safe_dump(mkdocs_config(site, docs, Path(dest).absolute(), nav), sort_keys=False))
        mkdocs_build(load_config(str(yml)))
    print(f'docs site: {Path(dest)}/index.html')
    return Path(dest)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--dest', default=str(ROOT/'_docs'), help='folder the static site is written to')
    p.add_argument('--no-write-sidebar', action='store_true', help='use nbs/sidebar.yml as committed')
    p.add_argument('--sidebar-only', action='store_true', help='only rewrite nbs/sidebar.yml')
    p.add_argument('--n-workers', type=int, default=min(2, os.cpu_count() or 1), help='processes for nbdev')
    a = p.parse_args(argv)
    if a.sidebar_only: return print('nbs/sidebar.yml', 'updated' if write_sidebar() else 'up to date')
    build(Path(a.dest), write=not a.no_write_sidebar, n_workers=a.n_workers)


if __name__ == '__main__': main()
