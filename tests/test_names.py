"""Static checks of the exported package: every name a module uses is defined in that module.

A function exported from a notebook runs there with the notebook's globals, so a name the notebook imported in a
non-exported cell (`plt`, a helper from `robustml.plots`) works on the page and fails with a NameError only when a user
calls the function from the package. pyflakes finds those names without running anything. Names inside quoted
annotations (`-> 'pd.DataFrame'`) are skipped: they are documentation, never evaluated."""
import io, re, tokenize
from pathlib import Path

import pytest
from pyflakes import api, messages, reporter

import robustml

PKG = Path(robustml.__file__).parent
MODULES = sorted(p for p in PKG.rglob('*.py') if p.name != '_modidx.py')


def _quoted_spans(src: str) -> dict:
    "Line number -> list of (start, end) columns of string literals on that line."
    spans = {}
    for t in tokenize.generate_tokens(io.StringIO(src).readline):
        if t.type == tokenize.STRING and t.start[0] == t.end[0]: spans.setdefault(t.start[0], []).append((t.start[1], t.end[1]))
    return spans


def undefined_names(path: Path) -> list[tuple[int, str]]:
    "(line, name) of pyflakes' undefined names in `path`, except those only used inside string literals (quoted annotations)."
    src = path.read_text()
    found = []
    class Keep(reporter.Reporter):
        def flake(self, m):
            if isinstance(m, messages.UndefinedName): found.append(m)
    api.check(src, str(path), Keep(io.StringIO(), io.StringIO()))
    lines, spans, out = src.splitlines(), _quoted_spans(src), []
    for m in found:
        name = m.message_args[0]
        cols = [k.start() for k in re.finditer(rf'\b{re.escape(name)}\b', lines[m.lineno - 1])]
        quoted = lambda c: any(a < c < b for a, b in spans.get(m.lineno, []))
        if not cols or not all(quoted(c) for c in cols): out.append((m.lineno, name))
    return out


def test_the_check_catches_a_notebook_only_name(tmp_path):
    f = tmp_path / 'm.py'
    f.write_text("import numpy as np\ndef plot(x) -> 'pd.DataFrame':\n    fig, ax = plt.subplots()\n    return np.asarray(x)\n")
    assert undefined_names(f) == [(3, 'plt')]   # the quoted 'pd' is not reported


@pytest.mark.parametrize('path', MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_every_used_name_is_defined(path):
    assert undefined_names(path) == []
