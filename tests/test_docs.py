"""The documentation site can be built from every notebook, and README.md is generated from `nbs/index.ipynb`.

Quarto is not needed: `nbdev_docs` first runs nbdev's processors on every notebook (`nbdev_proc_nbs`), which re-run
each cell that holds an `import`, an export or a `show_doc` in a fresh process, and that is the step that breaks when
such a cell uses a variable from a cell it does not run. These tests run exactly that step, plus the checks that keep
the rendered pages clean (imports in their own cells, prose cells without their code, no float captions, math that
pandoc can carry), and the README generation.

Run `python tests/test_docs.py --write-readme` to regenerate README.md where Quarto (and so `nbdev_readme`) is not
installed; it uses the same processors and pandoc's GitHub-markdown writer (from `pypandoc-binary`, a dev extra).
"""
from __future__ import annotations
import ast, json, os, re, subprocess, sys, textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
NOTEBOOKS = sorted(p for p in NBS.rglob('*.ipynb') if not any(s.startswith(('.', '_')) for s in p.relative_to(NBS).parts))
pytestmark = pytest.mark.skipif(not NOTEBOOKS, reason='needs a clone of the repository (nbs/)')
ids = [str(p.relative_to(NBS)) for p in NOTEBOOKS]

def _cells(nb_path: Path) -> list[dict]:
    return json.loads(nb_path.read_text(encoding='utf-8'))['cells']

def _src(cell: dict) -> str: return ''.join(cell['source'])

def _directives(src: str) -> dict[str, str]:
    "The cell's `#| key: value` directives (a flag such as `#| export` maps to '')."
    out = {}
    for line in src.splitlines():
        if not line.startswith('#|') or not line[2:].strip(): continue
        k, _, v = line[2:].strip().partition(':')
        out[k.split()[0]] = v.strip()
    return out

def _python(src: str) -> ast.Module|None:
    "The cell's code without magics and shell escapes, parsed; None when it is not Python."
    code = '\n'.join('' if l.lstrip().startswith(('%', '!')) else l for l in src.splitlines())
    try: return ast.parse(code)
    except SyntaxError: return None

def _code_cells(nb_path: Path):
    "`(index, source, directives, parsed tree or None)` of each code cell."
    for i, c in enumerate(_cells(nb_path)):
        if c['cell_type'] == 'code':
            src = _src(c)
            yield i, src, _directives(src), _python(src)

EXPORTS = {'export', 'exports', 'exporti', 'exec_doc'}
IMPORTS = (ast.Import, ast.ImportFrom)

# ---------------------------------------------------------------- nbdev's doc step, as `nbdev_proc_nbs` runs it
_PROC = textwrap.dedent('''
    import sys, warnings
    from pathlib import Path
    from nbdev.processors import FilterDefaults
    import nbdev.serve_drv
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        nbdev.serve_drv.main((src, dst, FilterDefaults))   # what nbdev_proc_nbs does for each notebook
    mixed = [str(w.message) for w in caught if 'imports and other code' in str(w.message)]
    if mixed: sys.exit('nbdev warns about a cell that mixes imports and other code:\\n' + mixed[0])
''')

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=ids)
def test_doc_processors(nb, tmp_path):
    "nbdev's doc pre-processing (the step before Quarto) runs clean on the notebook, in a fresh process."
    env = {k: v for k, v in os.environ.items() if k not in ('ROBUSTML_DATA', 'IN_TEST')}
    env.update(ROBUSTML_OFFLINE='1', ROBUSTML_PROGRESS='0', ROBUSTML_CACHE=str(tmp_path/'cache'), MPLBACKEND='Agg')
    r = subprocess.run([sys.executable, '-c', _PROC, str(nb), str(tmp_path/nb.name)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f'{nb.name}: the docs site cannot be built:\n{r.stderr[-3000:]}'
    assert (tmp_path/nb.name).exists()
    outs = json.dumps([c.get('outputs', []) for c in json.loads((tmp_path/nb.name).read_text())['cells']])
    assert '#LNone)' not in outs, f'{nb.name}: a show_doc source link without its line (#LNone)'

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=ids)
def test_imports_in_their_own_cells(nb):
    "nbdev's rule: a cell that imports does nothing else (the doc step runs it alone, without the cells before it)."
    bad = []
    for i, src, d, tree in _code_cells(nb):
        if 'nbdev_export()' in src or d.keys() & EXPORTS or d.get('eval', '').lower() == 'false': continue
        if tree is None or not any(isinstance(n, IMPORTS) for n in ast.walk(tree)): continue
        if not all(isinstance(n, IMPORTS) for n in tree.body): bad.append(f'cell {i}: {src[:80]!r}')
    assert not bad, f'{nb.name}: cells that import and also compute:\n' + '\n'.join(bad)

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=ids)
def test_title_and_description(nb):
    "Every page has a title (`# ...`) and a description (`> ...`) in its first cell."
    first = _cells(nb)[0]
    src = _src(first).strip()
    assert first['cell_type'] == 'markdown' and src.startswith('# '), f'{nb.name}: first cell is not a `# Title`'
    assert any(l.startswith('> ') and len(l) > 10 for l in src.splitlines()), f'{nb.name}: no `> description`'

def _calls_markdown(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and getattr(n.func, 'id', getattr(n.func, 'attr', None)) == 'Markdown'
               for n in ast.walk(node))

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=ids)
def test_prose_cells_hide_their_code(nb):
    "A cell that composes prose (`Markdown(...)` at top level) hides its code on the site: the reader sees the prose."
    bad = []
    for i, src, d, tree in _code_cells(nb):
        if d.get('echo', '').lower() == 'false' or 'hide' in d or d.get('include', '').lower() == 'false': continue
        if tree is None: continue
        if any(_calls_markdown(n) for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.ClassDef))):
            bad.append(f'cell {i}: {src[:80]!r}')
    assert not bad, f'{nb.name}: prose cells without `#| echo: false`:\n' + '\n'.join(bad)

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=ids)
def test_no_captioned_html_tables(nb):
    "HTML tables with a `<caption>` become cross-reference floats in Quarto, which its commonmark output cannot render."
    bad = [i for i, c in enumerate(_cells(nb)) for o in c.get('outputs', [])
           if '<caption' in ''.join(o.get('data', {}).get('text/html', ''))]
    assert not bad, f'{nb.name}: captioned HTML tables in the outputs of cells {bad}; put the title above the table'

def _pandoc():
    pypandoc = pytest.importorskip('pypandoc', reason='pypandoc-binary (a dev extra) brings pandoc')
    return pypandoc

def _quarto_formats() -> str:
    "The text of `_quarto.yml`."
    return (ROOT/'_quarto.yml').read_text(encoding='utf-8')

def test_quarto_formats():
    "The formats a user of nbdev expects (HTML and commonmark), with math kept as TeX in the markdown output."
    q = _quarto_formats()
    assert re.search(r'^\s+html:', q, re.M) and re.search(r'^\s+commonmark:', q, re.M)
    assert '+tex_math_dollars' in q

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=ids)
def test_markdown_converts_without_warnings(nb):
    "pandoc turns the page's prose into the site's commonmark output without a warning (math included)."
    pypandoc = _pandoc()
    text = '\n\n'.join(_src(c) for c in _cells(nb) if c['cell_type'] == 'markdown')
    r = subprocess.run([pypandoc.get_pandoc_path(), '-f', 'markdown', '-t', 'commonmark+tex_math_dollars', '-o', os.devnull],
                       input=text, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and '[WARNING]' not in r.stderr, f'{nb.name}: {r.stderr[:2000]}'

# ---------------------------------------------------------------- README.md from nbs/index.ipynb
def render_readme(index: Path = NBS/'index.ipynb') -> str:
    """README.md as `nbdev_readme` writes it: nbdev's processors on `index`, then GitHub markdown (pandoc's gfm writer,
    72 columns, as Quarto's `-t gfm`). Only markdown cells and hidden code cells are supported in `index`."""
    from execnb.nbio import read_nb
    from nbdev.processors import FilterDefaults
    pypandoc = _pandoc()
    cwd = os.getcwd(); os.chdir(index.parent)
    try:
        nb = read_nb(index); FilterDefaults()(nb)
    finally: os.chdir(cwd)
    title = nb.frontmatter_['title']
    body = []
    for c in nb.cells:
        if c.cell_type == 'raw': continue   # the front matter
        if c.cell_type != 'markdown': raise ValueError(f'index.ipynb: a visible code cell cannot go to README: {c.source[:80]!r}')
        body.append(c.source)
    text = f'# {title}\n\n' + '\n\n'.join(body) + '\n'
    out = pypandoc.convert_text(text, 'gfm', format='markdown', extra_args=['--columns=72'])
    # Quarto's README (what `nbdev_docs` writes, read from a real build) has one more blank line after the title
    head = f'# {title}\n\n'
    return out.replace(head, head + '\n', 1) if out.startswith(head) else out

def test_readme_is_generated_from_index():
    "README.md says exactly what `nbs/index.ipynb` says: regenerate it with `python tests/test_docs.py --write-readme`."
    want = render_readme()
    have = (ROOT/'README.md').read_text(encoding='utf-8')
    assert have == want, 'README.md differs from nbs/index.ipynb: run `python tests/test_docs.py --write-readme`'

def test_readme_has_the_two_commands_and_the_course():
    "What a new user needs is in the README: install, the main job, the test command, how to open the course."
    text = (ROOT/'README.md').read_text(encoding='utf-8')
    for needle in ('robustml reproduce all', 'nbdev_test', 'pytest', 'jupyter lab', '.[course]', 'ROBUSTML_DATA'):
        assert needle in text, needle
    ci = (ROOT/'.ci'/'run').read_text(encoding='utf-8')
    test_cmd = re.search(r'^pip install -e "\.\[dev\]" && .*$', text, re.M)
    assert test_cmd and test_cmd.group(0) in ci, 'README\'s test command and .ci/run disagree'

if __name__ == '__main__':
    if sys.argv[1:] == ['--write-readme']:
        (ROOT/'README.md').write_text(render_readme(), encoding='utf-8'); print('wrote', ROOT/'README.md')
    else: sys.exit(__doc__)
