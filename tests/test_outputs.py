"""What a reader sees on the site, checked from the notebooks' committed outputs (no Quarto needed).

Quarto shows a text output in a 660-px column as monospace lines that it does not wrap: a long `print` is cut at the
column's edge. A table wider than the column hides its right-hand columns. These tests read every notebook's outputs
and fail on the regressions a reader would meet: long text lines, raw `None`/`NaN`/dicts/`…` in tables, tables
wider than the column, absolute machine paths, zero-width intervals around an estimate strictly between 0 and 100%,
absolute links to the live site, lists glued to the paragraph above them, and escaped pipes in prose.
"""
from __future__ import annotations
import base64, html, json, re, struct
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
NOTEBOOKS = sorted(p for p in NBS.rglob('*.ipynb') if not any(s.startswith(('.', '_')) for s in p.relative_to(NBS).parts))
pytestmark = pytest.mark.skipif(not NOTEBOOKS, reason='needs a clone of the repository (nbs/)')
ids = [str(p.relative_to(NBS)) for p in NOTEBOOKS]

MAX_LINE = 100   # characters of a text-output line that fit the column (monospace, the site's font size)
MAX_FIG = 1000   # pixels of a saved figure's width: Quarto scales it to the 660-px column, so text shrinks below 2/3
MAX_TABLE = 110  # characters of a table row (widest cell per column, plus padding) that fit the column
SITE = 'robustml.github.io/robustml'

def _cells(nb: Path) -> list[dict]: return json.loads(nb.read_text(encoding='utf-8'))['cells']
def _text(x) -> str: return ''.join(x) if isinstance(x, list) else (x or '')
def _hidden(cell: dict) -> bool:
    src = _text(cell.get('source'))
    return any(l.strip() in ('#| hide', '#|hide', '#| include: false', '#| output: false') for l in src.splitlines())

def _outputs(nb: Path):
    "`(cell index, kind, text)` of each visible output: 'text' (stream or plain result), 'html', 'markdown'."
    for i, c in enumerate(_cells(nb)):
        if c['cell_type'] != 'code' or _hidden(c): continue
        for o in c.get('outputs', []):
            if o.get('output_type') == 'stream' and o.get('name') == 'stdout': yield i, 'text', _text(o.get('text'))
            elif 'data' in o:
                d = o['data']
                if 'text/html' in d: yield i, 'html', _text(d['text/html'])
                elif 'text/markdown' in d: yield i, 'markdown', _text(d['text/markdown'])
                elif 'text/plain' in d and not any(k.startswith('image/') for k in d): yield i, 'text', _text(d['text/plain'])

class _Table(HTMLParser):
    "The cells of the tables in an HTML fragment: a list of tables, each a list of rows of cell texts."
    def __init__(self):
        super().__init__(); self.tables, self._cell = [], None
    def handle_starttag(self, tag, attrs):
        if tag == 'table': self.tables.append([])
        elif tag == 'tr' and self.tables: self.tables[-1].append([])
        elif tag in ('td', 'th') and self.tables and self.tables[-1]: self._cell = ''
    def handle_endtag(self, tag):
        if tag in ('td', 'th') and self._cell is not None:
            self.tables[-1][-1].append(' '.join(self._cell.split())); self._cell = None
    def handle_data(self, data):
        if self._cell is not None: self._cell += data

def tables(fragment: str) -> list[list[list[str]]]:
    "Parse the tables of an HTML output."
    p = _Table(); p.feed(fragment); return [[r for r in t if r] for t in p.tables]

WRAP = 24  # a cell of several words wraps: it needs at most this many characters, or its longest word

def _cell_width(c: str) -> int:
    "Characters a cell needs: all of it without spaces, else its longest word or `WRAP`, whichever is more."
    return len(c) if ' ' not in c.strip() else min(len(c), max(WRAP, max(map(len, c.split()))))

def table_width(t: list[list[str]]) -> int:
    "Characters a table needs: the widest cell of each column (text wraps at spaces), plus 3 of padding per column."
    n = max(map(len, t)); return sum(max(_cell_width(r[j]) for r in t if j < len(r)) + 3 for j in range(n))

BAD_CELL = re.compile(r"^(None|NaN|nan|NaT|<NA>)$|…|\.\.\.$|^\{.*\}$|^\[[^\]]*\s[^\]]*\s[^\]]*\]$|^array\(")
INTERVAL = re.compile(r"\[\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\]")
PATH = re.compile(r"(?<![\w.])/(?:work|root|home|tmp|Users|private)/[\w.-]+")

def _problems(nb: Path) -> list[str]:
    out = []
    for i, kind, text in _outputs(nb):
        where = f'{nb.relative_to(NBS)} cell {i}'
        if kind == 'text':
            long = [l for l in text.splitlines() if len(l) > MAX_LINE]
            if long: out.append(f'{where}: {len(long)} text line(s) longer than {MAX_LINE} characters, cut on the site: {long[0][:90]!r}')
        if kind == 'html':
            for t in tables(text):
                w = table_width(t)
                if w > MAX_TABLE: out.append(f'{where}: a table {w} characters wide (more than {MAX_TABLE}): split or transpose it')
                bad = [c for r in t for c in r if BAD_CELL.search(c)]
                if bad: out.append(f'{where}: table cells a reader should not see: {bad[:4]}')
        plain = html.unescape(re.sub(r'<[^>]+>', ' ', text))
        if PATH.search(plain): out.append(f'{where}: an absolute machine path in an output: {PATH.search(plain).group(0)!r}')
        for lo, hi in INTERVAL.findall(plain):
            if float(lo) == float(hi) and 0 < float(lo) < 100:
                out.append(f'{where}: a zero-width interval [{lo}, {hi}] around an estimate strictly between 0 and 100%')
    return out

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=ids)
def test_outputs_fit_the_column(nb):
    "No long text lines, readable tables that fit, no machine paths, no degenerate intervals in the committed outputs."
    p = _problems(nb)
    assert not p, '\n'.join(p)

LIST_ITEM = re.compile(r'^\s*(?:[-*+]|\d+\.)\s')

def _prose_problems(nb: Path) -> list[str]:
    out = []
    for i, c in enumerate(_cells(nb)):
        if c['cell_type'] != 'markdown': continue
        src, where = _text(c['source']), f'{nb.relative_to(NBS)} cell {i}'
        if nb.name != 'index.ipynb' and SITE in src:
            out.append(f'{where}: an absolute link to the live site: link to the notebook relatively (../chX/NN_page.ipynb)')
        if '\\|' in src and '|' not in src.replace('\\|', ''):
            out.append(f'{where}: an escaped pipe outside a table shows as a backslash')
        lines, fence = src.splitlines(), False
        for a, b in zip(lines, lines[1:]):
            if a.lstrip().startswith('```'): fence = not fence
            if fence or not a.strip() or a.lstrip().startswith(('>', '|', '<', '#')): continue
            if LIST_ITEM.match(b) and not LIST_ITEM.match(a) and not a.startswith((' ', '\t')):
                out.append(f'{where}: a list glued to the line above it ({a[-40:]!r}): it renders as one paragraph; add a blank line')
                break
    return out

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=ids)
def test_prose_renders(nb):
    "Relative in-site links, lists separated from their paragraphs, no stray escaped pipes."
    p = _prose_problems(nb)
    assert not p, '\n'.join(p)

def test_the_checks_catch_what_they_are_for():
    "The checks flag each defect they exist for, and leave a clean output alone."
    t = tables('<table><tr><th>a</th><th>b</th></tr><tr><td>None</td><td>{&#x27;x&#x27;: 1}</td></tr></table>')
    assert t == [[['a', 'b'], ['None', "{'x': 1}"]]] and all(BAD_CELL.search(c) for c in t[0][1])
    assert table_width([['x' * 60, 'y' * 60]]) > MAX_TABLE and table_width([['12.3', '[11.0, 13.5]']]) < MAX_TABLE
    assert table_width([['a note of many words ' * 10, '1.0']]) < MAX_TABLE   # prose in a cell wraps
    assert [m for m in INTERVAL.findall('acc 42.0% [42.0, 42.0] and 0.0% [0.0, 0.0]') if m[0] == m[1]] == [('42.0', '42.0'), ('0.0', '0.0')]
    assert PATH.search('data: /work/shared/data/mias') and not PATH.search('see robustml/datasets/SHA256SUMS')
    assert LIST_ITEM.match('- goal') and LIST_ITEM.match('1. goal') and not LIST_ITEM.match('-1.5 is a number')


def png_width(b64: str|list) -> int:
    "Width in pixels of a base64 PNG (from its IHDR chunk)."
    return struct.unpack('>I', base64.b64decode(_text(b64))[16:20])[0]

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=ids)
def test_figures_fit_the_column(nb):
    "A figure wider than MAX_FIG pixels is shrunk on the site until its labels cannot be read: one or two panels a row."
    wide = [f'{nb.relative_to(NBS)} cell {i}: a figure {w} px wide (more than {MAX_FIG}): fewer panels a row or a smaller figsize'
            for i, c in enumerate(_cells(nb)) if c['cell_type'] == 'code' and not _hidden(c)
            for o in c.get('outputs', []) if 'image/png' in o.get('data', {})
            for w in [png_width(o['data']['image/png'])] if w > MAX_FIG]
    assert not wide, '\n'.join(wide)
