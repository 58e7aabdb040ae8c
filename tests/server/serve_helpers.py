"""Real servers for the server tests and bench/bench_server.py: uvicorn on a loopback port the
caller picks (in this process, or `polyasr serve` as a subprocess), a gate that holds a model's
worker inside a call until the test opens it, and multipart posts over http.client (for what the
OpenAI client does not send: bodies past the limit, disconnects)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

FIXTURES = Path(__file__).parents[1] / "fixtures"
QWEN = "qwen3-asr-0.6b"
TINY = "whisper-tiny.en"
START_SECS = 180  # bound on waiting for a server to listen or stop (a loaded CI machine imports torch slowly)


def free_socket() -> socket.socket:
    """A listening socket on a free loopback port, handed to uvicorn (no race for the port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@contextmanager
def running(engines: dict, **config):
    """`create_app(engines, ServerConfig(**config))` served by uvicorn in a thread; yields the base URL."""
    import uvicorn

    from polyasr.server import ServerConfig, create_app

    app = create_app(engines, ServerConfig(**config))
    sock = free_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_SECS
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(START_SECS)
        sock.close()
        assert not thread.is_alive(), "the server did not stop"


@contextmanager
def subprocess_server(args: list[str], env: dict | None = None):
    """`polyasr serve ARGS --port P` as a child process (one torch thread); yields (process, base URL)."""
    with free_socket() as probe:
        port = probe.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "polyasr.cli", "serve", *args, "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECS
        while True:
            assert proc.poll() is None, f"polyasr serve exited: {proc.stdout.read()}"
            assert time.monotonic() < deadline, "polyasr serve did not start"
            try:
                status, _, _ = request(url, "GET", "/health")
                if status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(START_SECS)


class ModelGate:
    """Holds the model's worker inside its next `_transcribe` calls until `release()`; counts calls."""

    def __init__(self, model, monkeypatch):
        self.open, self.entered, self.calls = threading.Event(), threading.Event(), 0
        real = model._transcribe

        def gated(audio, opts, progress=None):
            self.calls += 1
            self.entered.set()
            assert self.open.wait(START_SECS), "the test never opened the gate"
            return real(audio, opts, progress)

        monkeypatch.setattr(model, "_transcribe", gated)

    def release(self):
        self.open.set()


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data) in files.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        parts.append(head.encode() + b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def request(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout=60):
    """One HTTP request with http.client -> (status, headers, body bytes)."""
    import http.client
    from urllib.parse import urlparse

    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def post_audio(url: str, audio: Path | bytes, model: str, headers: dict | None = None, **fields):
    """POST /v1/audio/transcriptions with http.client -> (status, headers, body bytes)."""
    data = audio.read_bytes() if isinstance(audio, Path) else audio
    body, ctype = multipart({"model": model, **fields}, {"file": ("audio.wav", data)})
    return request(url, "POST", "/v1/audio/transcriptions", body, {"Content-Type": ctype, **(headers or {})})
