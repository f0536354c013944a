"""`codekiln serve` as a user runs it (a subprocess, SIGTERM), its refusals, and reading FIM marker text."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest

from codekiln.errors import UserError
from codekiln.serve.cli import api_keys, model_name
from codekiln.serve.prompts import split_markers
from serve_client import get, post


def _args(**options) -> argparse.Namespace:
    return argparse.Namespace(**{"api_key": [], "api_key_file": None, "no_auth": False, "host": "127.0.0.1",
                                 **options})


def test_serve_cli_starts_completes_and_stops_on_sigterm(serve_run, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("# the team's key\nteam-key\n\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "codekiln", "serve", "--model", str(serve_run), "--port", "0",
                             "--api-key-file", str(keys), "--max-batch", "2", "--threads", "1", "--context", "128"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        m = re.search(r"at (http://127\.0\.0\.1:\d+) \(ready in ([\d.]+) s", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        url = m.group(1)
        assert "tiny-run" in line and "context 128" in line and "auth on" in line
        assert get(url, "/health").json == {"status": "ok"}
        once = {"prompt": "def f(x):\n", "max_tokens": 4, "temperature": 0}  # greedy: never the end token
        assert post(url, "/v1/completions", once).status == 401
        reply = post(url, "/v1/completions", once, {"Authorization": "Bearer team-key"})
        assert reply.status == 200 and reply.json["usage"]["completion_tokens"] == 4
        assert reply.json["model"] == "tiny-run"
        # SIGTERM while a stream is in flight: the stream still ends properly, then the process exits 0.
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        body = {"prompt": "def f(x):\n", "max_tokens": 64, "temperature": 0, "deadline_ms": 0, "stream": True}
        conn.request("POST", "/v1/completions", body=json.dumps(body),
                     headers={"Authorization": "Bearer team-key", "Content-Type": "application/json"})
        resp = conn.getresponse()
        first = resp.readline()
        assert first.startswith(b"data: {")
        proc.send_signal(signal.SIGTERM)
        rest = resp.read().decode()
        conn.close()
        assert rest.rstrip().endswith("data: [DONE]") and '"finish_reason":"length"' in rest
        assert proc.wait(timeout=30) == 0
        assert "Traceback" not in proc.stderr.read()
    except AssertionError as exc:
        if proc.poll() is None:
            proc.kill()
        raise AssertionError(f"{exc}\nthe server's stderr:\n{proc.communicate(timeout=30)[1]}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("argv,message", [
    (["--host", "0.0.0.0"], "refusing to serve on 0.0.0.0 without an API key"),
    (["--max-batch", "0"], "--max-batch must be >= 1"),
    (["--no-auth", "--api-key", "k"], "--no-auth contradicts"),
])
def test_serve_cli_refusals_are_one_line(serve_run, argv, message):
    proc = subprocess.run([sys.executable, "-m", "codekiln", "serve", "--model", str(serve_run), "--port", "0", *argv],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_api_keys_and_hosts(tmp_path):
    assert api_keys(_args()) == ()
    assert api_keys(_args(host="::1")) == ()
    assert api_keys(_args(host="0.0.0.0", no_auth=True)) == ()
    assert api_keys(_args(host="0.0.0.0", api_key=["a", "b"])) == ("a", "b")
    with pytest.raises(UserError, match="without an API key"):
        api_keys(_args(host="192.168.1.5"))
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    with pytest.raises(UserError, match="holds no key"):
        api_keys(_args(api_key_file=str(empty)))
    with pytest.raises(UserError, match="cannot read"):
        api_keys(_args(api_key_file=str(tmp_path / "missing")))


def test_model_name(tmp_path):
    run = tmp_path / "my-run"
    assert model_name(str(run)) == "my-run"
    assert model_name(str(run / "checkpoints" / "step-100")) == "my-run"
    assert model_name(str(tmp_path / "demo" / "run")) == "demo"
    assert model_name(str(tmp_path / "demo" / "export")) == "demo"


P, S = "def f(x):\n    return ", "\n\nprint(f(2))\n"


@pytest.mark.parametrize("prompt", [
    f"<fim_prefix>{P}<fim_suffix>{S}<fim_middle>",  # Continue's default (StarCoder) template
    f"<|fim_prefix|>{P}<|fim_suffix|>{S}<|fim_middle|>",  # Qwen, codekiln, llama.vscode's OpenAI mode
    f"<PRE> {P} <SUF>{S} <MID>",  # CodeLlama
    f"<｜fim▁begin｜>{P}<｜fim▁hole｜>{S}<｜fim▁end｜>",  # DeepSeek
    f"<[fim-prefix]>{P}<[fim-suffix]>{S}<[fim-middle]>",  # Seed-Coder
    f"[SUFFIX]{S}[PREFIX]{P}",  # Codestral
])
def test_split_markers_reads_each_family(prompt):
    parts = split_markers(prompt)
    assert (parts.prefix, parts.suffix, parts.extra) == (P, S, [])


def test_split_markers_reads_repository_blocks_and_leaves_plain_text():
    qwen = ("<|repo_name|>geometry\n<|file_sep|>src/shapes.py\nclass Point:\n    pass\n"
            f"<|file_sep|>src/geometry.py\n<|fim_prefix|>{P}<|fim_suffix|>{S}<|fim_middle|>")
    parts = split_markers(qwen)
    assert (parts.repo, parts.path, parts.extra) == ("geometry", "src/geometry.py",
                                                     [("src/shapes.py", "class Point:\n    pass\n")])
    assert (parts.prefix, parts.suffix) == (P, S)
    vscode = f"Context:\n\nsome chunk\n<|fim_prefix|>{P}<|fim_suffix|>{S}<|fim_middle|>"
    assert split_markers(vscode).prefix == "Context:\n\nsome chunk\n" + P
    assert split_markers(P) is None
    assert split_markers(f"<fim_prefix>{P}<fim_suffix>{S}") is None  # no middle marker: not a FIM layout
    assert split_markers(f"<fim_prefix>{P}<fim_suffix>{S}<fim_middle>already written") is None


def test_import_is_light():
    """The CLI registers serve without importing FastAPI or torch (a missing serve extra breaks nothing else)."""
    code = ("import sys, argparse; from codekiln.serve.cli import add_parser; "
            "add_parser(argparse.ArgumentParser().add_subparsers()); "
            "print(any(m in sys.modules for m in ('fastapi', 'uvicorn', 'torch')))")
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
    assert time.monotonic() - t0 < 30
