"""A real HTTP file server on 127.0.0.1 for tests, with scripted faults.

    with serve(root) as server:
        server.fail("/a/b.fits", "500", "truncate")   # first two requests fail, then normal
        fetch(server.url + "/a/b.fits", ...)
        server.requests                                # [(path, headers dict, status), ...]

Faults, consumed one per request to that path: "500", "404", "truncate" (full Content-Length
header, half the bytes, then close), "truncate_unsized" (no Content-Length, half the bytes,
then close: only the file's own structure can tell), "corrupt" (right length, one byte flipped), "slow" (sleep
past the client's timeout before answering). `server.range_support = False` makes the server
ignore Range headers and answer 200 with the whole file.
"""
from __future__ import annotations

import contextlib
import http.server
import threading
import time
import urllib.parse
from pathlib import Path

FAULTS = ("500", "404", "truncate", "truncate_unsized", "corrupt", "slow")


class _Handler(http.server.BaseHTTPRequestHandler):
    timeout = 10  # seconds a connection may idle: bounds every test

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        server = self.server
        path = urllib.parse.unquote(urllib.parse.urlparse(self.path).path)
        with server.lock:
            queue = server.faults.get(path, [])
            fault = queue.pop(0) if queue else None
        try:
            self._answer(path, fault)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up first (a timeout test): nothing left to answer

    def _record(self, path, status):
        """Log the request before any byte of the answer leaves, so a client never sees it
        unrecorded."""
        with self.server.lock:
            self.server.requests.append((path, dict(self.headers), status))

    def _answer(self, path, fault):
        server = self.server
        if fault == "slow":
            time.sleep(server.slow_s)
        if fault == "500":
            self._record(path, 500)
            self.send_error(500, "scripted failure")
            return
        file = (server.root / path.lstrip("/")).resolve()
        if fault == "404" or not file.is_file() or server.root not in file.parents:
            self._record(path, 404)
            self.send_error(404, "not found")
            return
        data = file.read_bytes()
        start, status = 0, 200
        byte_range = self.headers.get("Range")
        if byte_range and server.range_support:
            start = int(byte_range.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self._record(path, 416)
                self.send_error(416, "range not satisfiable")
                return
            status = 206
        body = data[start:]
        self._record(path, status)
        self.send_response(status)
        if fault != "truncate_unsized":
            self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Accept-Ranges", "bytes" if server.range_support else "none")
        self.end_headers()
        if fault in ("truncate", "truncate_unsized"):
            body = body[: len(body) // 2]
        elif fault == "corrupt" and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        self.wfile.write(body)
        self.wfile.flush()


@contextlib.contextmanager
def serve(root):
    """Serve the files under `root` on a free loopback port; yields the server object with
    `url`, `requests`, `fail(path, *faults)`, `range_support` and `slow_s`."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.root = Path(root).resolve()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    server.requests, server.faults, server.lock = [], {}, threading.Lock()
    server.range_support, server.slow_s = True, 2.0

    def fail(path, *faults):
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {FAULTS}")
        with server.lock:
            server.faults.setdefault("/" + path.lstrip("/"), []).extend(faults)

    server.fail = fail
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
