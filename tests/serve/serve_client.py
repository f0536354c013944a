"""A small HTTP client on the standard library for the server tests: JSON in, status + JSON out, SSE lines."""

from __future__ import annotations

import http.client
import json
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class Reply:
    """An HTTP answer: status, headers (lower-case names), raw body and its JSON (None when not JSON)."""

    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self):
        try:
            return json.loads(self.raw)
        except ValueError:
            return None


def _conn(url: str, timeout: float) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)


def request(url: str, method: str, path: str, body=None, headers: dict | None = None, raw: bytes | None = None,
            timeout: float = 60.0) -> Reply:
    """One request on a fresh connection; body is sent as JSON unless raw bytes are given."""
    conn = _conn(url, timeout)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def post(url: str, path: str, body, headers: dict | None = None, timeout: float = 60.0) -> Reply:
    """POST a JSON body."""
    return request(url, "POST", path, body, headers, timeout=timeout)


def get(url: str, path: str, headers: dict | None = None) -> Reply:
    """GET."""
    return request(url, "GET", path, headers=headers)


def sse(url: str, path: str, body, headers: dict | None = None, timeout: float = 60.0) -> tuple[int, list[str]]:
    """POST and read a server-sent event stream to its end: (status, the payload of each `data:` line)."""
    conn = _conn(url, timeout)
    try:
        conn.request("POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json",
                                                                             **(headers or {})})
        resp = conn.getresponse()
        if resp.status != 200:
            return resp.status, [resp.read().decode()]
        data = []
        for line in resp:
            line = line.decode().rstrip("\n")
            if line.startswith("data: "):
                data.append(line[len("data: "):])
        return resp.status, data
    finally:
        conn.close()


def send_and_drop(url: str, path: str, body, wait_s: float = 0.0, read_first: bool = False, until=None) -> bytes:
    """Send a request, optionally read up to its first server-sent event, wait `wait_s` or `until()` is true,
    then close the socket (an editor cancelling)."""
    parts = urlsplit(url)
    data = json.dumps(body).encode()
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    head = (f"POST {path} HTTP/1.1\r\nHost: {parts.hostname}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    sock.sendall(head + data)
    got = b""
    while read_first and b"data: " not in got:
        more = sock.recv(65536)
        if not more:
            break
        got += more
    if wait_s:
        time.sleep(wait_s)
    end = time.monotonic() + 10
    while until is not None and not until() and time.monotonic() < end:
        time.sleep(0.001)
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    return got


def wait_idle(engine, timeout: float = 10.0) -> dict:
    """engine.stats() once no request is queued or running (fails the test after timeout)."""
    end = time.monotonic() + timeout
    while True:
        stats = engine.stats()
        if not (stats["queued"] or stats["prefilling"] or stats["running"]):
            return stats
        if time.monotonic() > end:
            raise AssertionError(f"the engine is still busy after {timeout} s: {stats}")
        time.sleep(0.01)
