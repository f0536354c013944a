"""The sandbox's behaviour: reasons, limits, environment, scratch dirs, ordering, refusal, and its fallbacks."""

import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from codekiln.errors import UserError
from codekiln.eval import sandbox
from codekiln.eval.sandbox import ExecResult, isolation, run_program, run_programs

SRC = str(Path(sandbox.__file__).resolve().parents[2])


@pytest.fixture
def marker():
    """A string to put in a test program's command line; whatever carries it is killed after the test."""
    text = f"codekiln-test-{os.getpid()}-{time.monotonic_ns()}"
    yield text
    for pid in marked(text):
        try:
            os.kill(int(pid), 9)
        except OSError:
            pass


def marked(text: str) -> list[str]:
    """Pids whose command line holds text."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            pass
    return found


def run(programs, **kwargs):
    """run_programs with permission and two workers."""
    return run_programs(programs, workers=2, allow_code_execution=True, **kwargs)


def test_refuses_without_allow_code_execution():
    for call in (lambda: run_program("print(1)"), lambda: run_programs(["print(1)"])):
        with pytest.raises(UserError) as excinfo:
            call()
        assert str(excinfo.value) == (
            "refusing to execute model-generated code without --allow-code-execution (or "
            "eval.allow_code_execution: true); it runs in codekiln's sandbox, see docs/sandbox.md")


def test_reasons_for_each_way_a_program_ends():
    cases = {
        "print('hi')": ("passed", "passed"),
        "raise SystemExit(0)": ("passed", "passed"),
        "assert 1 == 2": ("failed", "failed: AssertionError"),
        "undefined_name": ("failed", "failed: NameError"),
        "import json\njson.loads('{')": ("failed", "failed: JSONDecodeError"),
        "def f(:\n    pass": ("failed", "failed: SyntaxError"),
        "if True:\nreturn 1": ("failed", "failed: IndentationError"),
        "raise KeyboardInterrupt": ("failed", "failed: KeyboardInterrupt"),
        "input()": ("failed", "failed: EOFError"),  # stdin is /dev/null
        "import sys\nsys.exit(3)": ("failed", "exit code 3"),
        "import sys\nsys.exit('bad')": ("failed", "exit code 1"),
        "import os\nos.kill(os.getpid(), 9)": ("failed", "killed by signal 9"),
        "x = ' ' * (10 ** 11)": ("failed", "memory limit"),
    }
    results = run(list(cases), timeout=10.0)
    assert [(r.status, r.reason) for r in results] == list(cases.values())
    assert results[0].stdout == "hi\n" and results[0].passed
    assert "AssertionError" in results[2].stderr and not results[2].passed
    assert all(isinstance(r, ExecResult) and r.duration_s > 0 for r in results)


def test_timeout_reason_and_duration():
    sleeper, spinner, quiet = run(["import time\ntime.sleep(30)", "while True:\n    pass",
                                   "import os, time\nos.close(1)\nos.close(2)\ntime.sleep(30)"], timeout=1.0)
    for result in (sleeper, spinner, quiet):  # closing its output does not end a program early
        assert (result.status, result.reason) == ("timeout", "timed out after 1.0s")
        assert 1.0 <= result.duration_s < 2.5
    closed_then_done = run_program("import os, time\nos.close(1)\ntime.sleep(0.3)", allow_code_execution=True)
    assert closed_then_done.passed and closed_then_done.duration_s >= 0.3


def test_output_is_capped():
    flood, exact, err_flood = run(["import sys\nwhile True:\n    sys.stdout.write('x' * 4096)",
                                   "print('y' * 999)",
                                   "import sys\nsys.stderr.write('z' * 5000)"], max_output=1000, timeout=5.0)
    assert (flood.status, flood.reason) == ("failed", "output limit")
    assert flood.stdout == "x" * 1000 and flood.duration_s < 4
    assert exact.passed and exact.stdout == "y" * 999 + "\n"  # exactly the cap is fine
    assert (err_flood.reason, err_flood.stderr) == ("output limit", "z" * 1000)


def test_output_is_decoded_with_replacement():
    result = run_program("import sys\nsys.stdout.buffer.write(b'ok \\xff\\xfe')", allow_code_execution=True)
    assert result.passed and result.stdout == "ok \ufffd\ufffd"


def test_environment_is_empty_and_python_isolated(monkeypatch):
    monkeypatch.setenv("CODEKILN_PARENT_ONLY", "do-not-inherit")
    monkeypatch.setenv("PYTHONPATH", "/nowhere")
    program = "import json, os, sys\nprint(json.dumps([dict(os.environ), sys.flags.isolated, sys.path]))"
    result = run_program(program, allow_code_execution=True)
    env, isolated, path = json.loads(result.stdout)
    assert set(env) <= {"PATH", "HOME", "TMPDIR", "LANG"}
    assert env["HOME"] == env["TMPDIR"] and "/root" not in env["HOME"]
    assert isolated == 1 and "/nowhere" not in path


def test_cwd_is_a_fresh_scratch_dir_removed_afterwards():
    program = ("import os\nprint(os.getcwd())\nprint(sorted(os.listdir('.')))\n"
               "open('left-behind.txt', 'w').write('x')\nos.mkdir('sub')\nos.chmod('sub', 0)\n")
    first, second = run([program, program])
    cwd1, listing1 = first.stdout.splitlines()
    cwd2, listing2 = second.stdout.splitlines()
    assert first.passed and second.passed
    assert cwd1 != cwd2 and Path(cwd1).parent == Path(sandbox._private_root())
    assert listing1 == listing2 == "['program.py']"  # nothing from the other run, nothing from the parent
    assert not Path(cwd1).exists() and not Path(cwd2).exists()
    assert os.listdir(sandbox._private_root()) == []


def test_order_is_preserved_with_two_workers_and_progress_counts():
    programs = [f"import time\ntime.sleep({0.3 if i % 2 == 0 else 0.0})\nprint({i})" for i in range(6)]
    ticks = []
    start = time.monotonic()
    results = run_programs(programs, workers=2, allow_code_execution=True, progress=ticks.append)
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(6)]
    assert ticks == [1] * 6
    assert time.monotonic() - start < 0.3 * 3 + 2  # the sleepers overlap
    assert run_programs([], allow_code_execution=True) == []


def test_an_interrupted_batch_kills_its_sandboxes(marker):
    sleeper = ("import os, sys\n"
               f"os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(30)', '{marker}'])")

    def interrupt(_):
        raise KeyboardInterrupt

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_programs(["pass"] + [sleeper] * 5, workers=2, allow_code_execution=True, progress=interrupt)
    assert time.monotonic() - start < 5
    deadline = time.monotonic() + 2
    while marked(marker):
        assert time.monotonic() < deadline, "a sandbox outlived the interrupted batch"
        time.sleep(0.05)


def test_isolation_describes_each_layer():
    info = isolation()
    assert {"mode", "network", "pid", "filesystem", "user", "limits", "environment"} <= set(info)
    assert all(isinstance(v, str) and v for v in info.values())
    if sandbox._mode() == "root":
        assert info["network"].startswith("netns") and info["pid"].startswith("pidns")
        assert "read-only" in info["filesystem"] and "nobody" in info["user"]


def test_a_program_cannot_see_the_harness_processes_or_write_the_tree():
    if sandbox._mode() == "none":
        pytest.skip("the fallback has no namespaces")
    program = ("import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n"
               "open(os.path.join(os.path.dirname(os.getcwd()), 'escape'), 'w')\n")
    result = run_program(program, allow_code_execution=True)
    pids = json.loads(result.stdout)
    assert os.getpid() not in pids and max(pids) < 10  # its own PID namespace: init, itself
    assert result.reason in ("failed: OSError", "failed: PermissionError", "failed: FileNotFoundError")


# --- choosing the mode: never unsandboxed without the explicit word ------------------------------------------

@pytest.fixture
def no_isolation(monkeypatch):
    """The sandbox as it is on a machine where the kernel refuses namespaces and bubblewrap is not installed."""
    monkeypatch.setattr(sandbox, "_candidates", lambda: [])
    monkeypatch.setattr(sandbox, "_bwrap", lambda: None)


def test_auto_refuses_when_no_isolating_mode_works(no_isolation):
    for call in (lambda: run_programs(["pass"], allow_code_execution=True), lambda: isolation(),
                 lambda: sandbox.resolve_mode("auto")):
        with pytest.raises(UserError) as excinfo:
            call()
        message = str(excinfo.value)
        assert "\n" not in message
        assert message.startswith("no isolating sandbox works here (bwrap: bubblewrap is not installed)")
        for fix in ("install bubblewrap", "allow user namespaces", "--sandbox none"):
            assert fix in message


def test_auto_names_what_each_mode_said(monkeypatch):
    monkeypatch.setattr(sandbox, "_candidates", lambda: ["root", "userns"])
    monkeypatch.setattr(sandbox, "_bwrap", lambda: None)
    monkeypatch.setattr(sandbox, "_probe_mode", lambda mode, python: f"unshare: {mode} refused")
    with pytest.raises(UserError, match=r"\(root: unshare: root refused; userns: unshare: userns refused; "
                                        r"bwrap: bubblewrap is not installed\)"):
        sandbox.resolve_mode()


def test_auto_picks_the_strongest_isolating_mode():
    try:
        mode = sandbox.resolve_mode("auto")
    except UserError as exc:  # test_containment fails where namespaces work yet auto refuses
        pytest.skip(f"no isolating mode on this machine: {exc}")
    assert mode in ("root", "userns", "bwrap")
    if os.geteuid() == 0:
        assert mode == "root"


def test_an_unknown_or_unavailable_mode_is_one_line(monkeypatch):
    with pytest.raises(UserError, match="unknown sandbox mode 'chroot'; choose one of auto, root, userns, bwrap, none"):
        run_programs(["pass"], allow_code_execution=True, sandbox="chroot")
    monkeypatch.setattr(sandbox, "_bwrap", lambda: None)
    with pytest.raises(UserError, match=r"^sandbox mode bwrap does not work here \(bubblewrap is not installed\); "):
        run_programs(["pass"], allow_code_execution=True, sandbox="bwrap")


def test_none_runs_only_when_asked_for_by_name(no_isolation, in_mode, caplog):
    in_mode("none")
    with pytest.raises(UserError):
        run_programs(["print('unsandboxed')"], allow_code_execution=True)
    caplog.set_level(logging.WARNING, logger="codekiln.eval.sandbox")
    [result] = run_programs(["print('unsandboxed')"], allow_code_execution=True, sandbox="none")
    assert result.passed and result.stdout == "unsandboxed\n"
    info = isolation("none")
    assert info["mode"].startswith("none") and "NOT isolated" in info["network"]
    assert info["warning"] == sandbox._NONE_WARNING
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "chosen explicitly" in warnings[0].getMessage()


def test_harness_errors_stop_a_score():
    verdicts = [ExecResult("failed", "failed: AssertionError", 0.1, "", "")] * 2
    sandbox.check_harness_errors(verdicts, "root")  # failures are a score, not a harness problem
    errors = [ExecResult("error", "sandbox error: exec: [Errno 13] Permission denied", 0.0, "", "")] * 3
    sandbox.check_harness_errors(errors[:2] + verdicts, "root")  # half is not most
    with pytest.raises(UserError, match=r"^3 of 5 programs ended in a sandbox error, not a test result, in sandbox "
                                        r"mode none \(first: sandbox error: exec: \[Errno 13\] Permission denied\)"):
        sandbox.check_harness_errors(errors + verdicts, "none")


def test_the_child_program_is_a_module_of_its_own():
    from codekiln.eval import sandbox_child

    assert sandbox._CHILD == os.path.abspath(sandbox_child.__file__)
    assert sandbox.MAX_PROCESSES == sandbox_child.MAX_PROCESSES
    assert "_WRAPPER" not in vars(sandbox)


# --- the fallback without namespaces, when asked for -----------------------------------------------------------

def test_none_mode_still_limits_and_kills_what_outlives_the_program(in_mode, marker):
    in_mode("none")
    daemon = f"""import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        {{chdir}}
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(30)", "{marker}"])
    os._exit(0)
"""
    keeps_cwd = daemon.replace("{chdir}", "pass")
    keeps_pipe = daemon.replace("{chdir}", "os.chdir('/')")
    results = run([keeps_cwd, keeps_pipe, "print('ok')", "while True:\n    pass",
                   "x = bytearray(10 * 1024 ** 3)"], timeout=2.0, sandbox="none")
    assert [r.reason for r in results] == ["passed", "passed", "passed", "timed out after 2.0s", "memory limit"]
    assert results[0].duration_s < 1.9  # the program's end is noticed although its daemon holds the pipes
    assert marked(marker) == []


# --- an unprivileged harness: the user-namespace mode ----------------------------------------------------------

def test_an_unprivileged_harness_gets_a_user_namespace_sandbox(nobody_python):
    """As root we can also check the mode a normal user gets: run the harness itself as nobody."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root to become another user")
    python = nobody_python
    if python is None:
        pytest.skip("no interpreter that nobody may run")
    script = (f"import sys, json; sys.path.insert(0, {SRC!r})\n"
              "from codekiln.eval import sandbox\n"
              "try:\n"
              "    mode = sandbox.resolve_mode()\n"
              "except Exception as e:\n"
              "    print(json.dumps(['unavailable', str(e)]))\n"
              "    raise SystemExit(0)\n"
              "rs = sandbox.run_programs(['import os; print(os.getuid())', \"open('/etc/x', 'w')\",\n"
              "    \"import socket; socket.create_connection(('127.0.0.1', 9), timeout=1)\"],\n"
              "    allow_code_execution=True, timeout=5)\n"
              "print(json.dumps([mode, [(r.reason, r.stdout) for r in rs]]))\n")
    proc = subprocess.run(["setpriv", f"--reuid={sandbox.NOBODY}", f"--regid={sandbox.NOBODY}", "--clear-groups",
                           python, "-I", "-c", script], capture_output=True, text=True, cwd="/", timeout=60)
    assert proc.returncode == 0, proc.stderr
    mode, results = json.loads(proc.stdout.splitlines()[-1])
    if mode == "unavailable":
        pytest.skip(f"this kernel gives unprivileged users no user namespaces: {results}")
    assert mode == "userns"
    assert results == [["passed", "0\n"], ["failed: OSError", ""], ["failed: OSError", ""]]


# --- bubblewrap, where it is installed -------------------------------------------------------------------------

def test_bubblewrap_mode_isolates_too(in_mode, marker):
    in_mode("bwrap")
    daemon = (f"import os, sys, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
              f"        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(30)', '{marker}'])\n"
              f"    os._exit(0)\ntime.sleep(30)\n")
    results = run(["import os\nprint(sorted(os.environ))", "import socket\nsocket.create_connection(('192.0.2.1', 9))",
                   "open('/etc/codekiln-escape', 'w')", "open('here.txt', 'w').write('fine')",
                   "import ctypes\nctypes.string_at(0)", daemon], timeout=2.0, sandbox="bwrap")
    assert set(json.loads(results[0].stdout.replace("'", '"'))) <= {"PATH", "HOME", "TMPDIR", "LANG", "PWD"}
    assert [r.reason for r in results[1:]] == ["failed: OSError", "failed: OSError", "passed", "killed by signal 11",
                                               "timed out after 2.0s"]
    assert marked(marker) == []
    assert isolation("bwrap")["mode"].startswith("bubblewrap")
