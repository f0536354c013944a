"""A small LSP client for the language server tests: JSON-RPC with Content-Length framing over a
subprocess's stdin/stdout, a reader thread, and waits on responses by id."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path


class LspProcess:
    """`codekiln lsp` (or any command) as a subprocess spoken to over stdio."""

    def __init__(self, cmd: list[str], env: dict | None = None, cwd: str | None = None):
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, cwd=cwd)
        self.next_id = 0
        self.responses: dict[int | str | None, dict] = {}
        self.notifications: list[dict] = []
        self._cond = threading.Condition()
        self._stderr: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self._stderr.extend(iter(self.proc.stderr.readline, b"")),
                         daemon=True).start()

    @property
    def stderr(self) -> str:
        """What the server wrote on stderr so far."""
        return b"".join(self._stderr).decode(errors="replace")

    def _read(self) -> None:
        out = self.proc.stdout
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    with self._cond:
                        self._cond.notify_all()
                    return
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode().partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            msg = json.loads(out.read(length))
            with self._cond:
                if "id" in msg and "method" not in msg:
                    self.responses[msg["id"]] = msg
                else:
                    self.notifications.append(msg)
                self._cond.notify_all()

    def send_raw(self, body: bytes) -> None:
        """One framed message with this exact body."""
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def send(self, msg: dict) -> None:
        """One JSON-RPC message."""
        self.send_raw(json.dumps({"jsonrpc": "2.0", **msg}).encode())

    def request(self, method: str, params) -> int:
        """Send a request; its id."""
        self.next_id += 1
        self.send({"id": self.next_id, "method": method, "params": params})
        return self.next_id

    def notify(self, method: str, params) -> None:
        """Send a notification."""
        self.send({"method": method, "params": params})

    def response(self, rid, timeout: float = 30.0) -> dict:
        """The response to request `rid` (waits up to `timeout` seconds)."""
        end = time.monotonic() + timeout
        with self._cond:
            while rid not in self.responses:
                left = end - time.monotonic()
                if left <= 0 or self.proc.poll() is not None and rid not in self.responses:
                    raise AssertionError(f"no response to {rid} within {timeout} s; stderr:\n{self.stderr}")
                self._cond.wait(min(left, 0.2))
            return self.responses.pop(rid)

    def call(self, method: str, params, timeout: float = 30.0) -> dict:
        """Request and wait: the response message."""
        return self.response(self.request(method, params), timeout)

    def close(self) -> None:
        """Kill the process if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def initialize(client: LspProcess, root: Path, inline: bool = True) -> dict:
    """initialize (with a workspace folder) and initialized; the initialize result."""
    caps = {"textDocument": {"synchronization": {"dynamicRegistration": False},
                             "completion": {"completionItem": {"snippetSupport": False}}}}
    if inline:
        caps["textDocument"]["inlineCompletion"] = {"dynamicRegistration": False}
    reply = client.call("initialize", {"processId": None, "rootUri": root.as_uri(), "capabilities": caps,
                                       "workspaceFolders": [{"uri": root.as_uri(), "name": root.name}]},
                        timeout=120)
    client.notify("initialized", {})
    return reply


def open_doc(client: LspProcess, uri: str, text: str, lang: str = "python", version: int = 1) -> None:
    """textDocument/didOpen."""
    client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": lang, "version": version,
                                                            "text": text}})


def inline(client: LspProcess, uri: str, line: int, character: int, kind: int = 1) -> int:
    """Send textDocument/inlineCompletion (trigger kind 1: invoked, 2: automatic); its id."""
    return client.request("textDocument/inlineCompletion", {
        "textDocument": {"uri": uri}, "position": {"line": line, "character": character},
        "context": {"triggerKind": kind}})
