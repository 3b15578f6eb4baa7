"Shared pytest fixtures: an isolated data environment, a local HTTP server, and the real shared data when present."
import http.server
import os
import threading
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run and every machine: a failure is then a property that does not
# hold, never the luck of one draw (set HYPOTHESIS_PROFILE=explore to search with fresh random examples).
settings.register_profile('robustml', derandomize=True, print_blob=True)
settings.register_profile('explore', derandomize=False, max_examples=500)
settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'robustml'))

_SHARED_CANDIDATES = [os.environ.get('ROBUSTML_DATA'), Path(__file__).resolve().parents[2]/'shared'/'data']


def _shared_data():
    "The real data folder (ROBUSTML_DATA, else ../shared/data next to the checkout), or None."
    for p in _SHARED_CANDIDATES:
        if p and (Path(p)/'SHA256SUMS').is_file(): return Path(p)
    return None


@pytest.fixture(autouse=True)
def _cpu_device(monkeypatch):
    """Run every test on the CPU, even where a GPU is present: the reproducibility tests compare two runs bit for bit,
    which GPU kernels do not promise (the `paper` profile is where a GPU belongs)."""
    monkeypatch.setenv('ROBUSTML_DEVICE', os.environ.get('ROBUSTML_TEST_DEVICE', 'cpu'))


@pytest.fixture
def data_env(tmp_path, monkeypatch):
    "No ROBUSTML_DATA, an empty cache under tmp_path, no progress bars, no network: returns the cache folder."
    cache = tmp_path/'cache'
    monkeypatch.delenv('ROBUSTML_DATA', raising=False)
    monkeypatch.setenv('ROBUSTML_CACHE', str(cache))
    monkeypatch.setenv('ROBUSTML_PROGRESS', '0')
    monkeypatch.setenv('ROBUSTML_OFFLINE', '1')
    return cache


@pytest.fixture
def shared_data(monkeypatch):
    "The real shared data folder, set as ROBUSTML_DATA; skips the test when it is absent."
    p = _shared_data()
    if p is None: pytest.skip('real data not available (set ROBUSTML_DATA)')
    monkeypatch.setenv('ROBUSTML_DATA', str(p))
    return p


class _Handler(http.server.BaseHTTPRequestHandler):
    "Serves `server.routes`: path -> bytes, or (bytes, declared Content-Length) to simulate a truncated transfer."
    def do_GET(self):
        route = self.server.routes.get(self.path)
        if route is None: self.send_error(404); return
        body, length = route if isinstance(route, tuple) else (route, len(route))
        self.send_response(200)
        self.send_header('Content-Type', 'application/octet-stream')
        self.send_header('Content-Length', str(length))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args): pass


@pytest.fixture
def http_server():
    "A local HTTP server on 127.0.0.1 in a thread; returns (routes dict to fill, base URL)."
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    srv.routes = {}
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.routes, f'http://127.0.0.1:{srv.server_address[1]}'
    srv.shutdown(); srv.server_close()
