"""Proof of containment: hostile programs run through the real sandbox in one parallel batch, and none gets out.

The batch runs once in every isolating mode that works on this machine (root, userns, bwrap); a mode that
does not work here is skipped with one line saying why. The `none` mode is no sandbox, so it is not proved
here: tests/eval/test_sandbox.py checks that it runs only when asked for by name.

Every hostile program must end as a non-passed result with a sensible reason, and afterwards: nothing outside
its scratch dir changed (the test's own dirs, world-writable ones in /tmp and /var/tmp, canaries), the test's
TCP and UDP listeners heard nothing, the parent's secret appears in no output, no process of theirs is alive,
and the harness runs on. Each program first re-executes itself with MARKER in its argv, so that any process
descended from it shows MARKER in /proc/PID/cmdline.
"""

import hashlib
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from sandbox_modes import ISOLATING, python_for

from codekiln.eval import sandbox
from codekiln.eval.sandbox import run_programs

MARKER = f"codekiln-hostile-{uuid.uuid4().hex}"
SECRET = f"secret-{uuid.uuid4().hex}"
TIMEOUT = 3.0

PRELUDE = f"""import os, sys
if sys.argv[-1] != {MARKER!r}:  # put the marker in argv: every process descended from this one shows it
    os.execv(sys.executable, [sys.executable, "-I", sys.argv[0], {MARKER!r}])
"""


def hostile_programs(ctx: dict) -> dict[str, str]:
    """name -> program; ctx holds the paths, ports and pids the attacks aim at."""
    victims = [ctx["owned"], ctx["tmp_open"], ctx["var_open"]]
    return {
        "passing": "print('fine')\n",
        "failing": "assert 1 + 1 == 3\n",
        "fork_bomb": "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        "infinite_loop": "while True:\n    pass\n",
        "memory_bomb": "blob = bytearray(10 * 1024 ** 3)\nprint(len(blob))\n",
        "output_flood": "while True:\n    sys.stdout.write('x' * (1 << 20))\n    sys.stderr.write('y' * (1 << 20))\n",
        "network": f"""
import socket
tried, reached = 0, []
for host in {ctx["hosts"]!r}:
    tried += 2
    try:
        socket.create_connection((host, {ctx["tcp_port"]}), timeout=1).close()
        reached.append(("tcp", host))
    except OSError as e:
        print("tcp", host, e)
    try:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.sendto(b"hello", (host, {ctx["udp_port"]}))
        if host != "127.0.0.1":  # a datagram sent on the sandbox's own loopback (bwrap's is up) stays inside;
            reached.append(("udp", host))  # whether anything got out, the test's listener says
    except OSError as e:
        print("udp", host, e)
if not reached:
    raise OSError(f"none of {{tried}} connections got out")
print("reached", reached)
""",
        "write_outside": f"""
refused = []
for directory in {[str(v) for v in victims]!r}:
    try:
        with open(os.path.join(directory, "written-by-{MARKER}"), "w") as f:
            f.write("escaped")
        os.mkdir(os.path.join(directory, "dir-{MARKER}"))
    except OSError as e:
        refused.append(e)
if len(refused) == {len(victims)}:
    raise PermissionError(f"every write refused: {{refused}}")
""",
        "delete_canaries": f"""
refused = []
for canary in {[str(v / "canary.txt") for v in victims]!r}:
    try:
        os.unlink(canary)
    except OSError as e:
        refused.append(e)
    try:
        with open(canary, "w") as f:
            f.write("overwritten")
    except OSError as e:
        refused.append(e)
if len(refused) == {2 * len(victims)}:
    raise PermissionError(f"every change refused: {{refused}}")
""",
        "write_tmp": f"""
for directory in ("/tmp", "/var/tmp", "/dev/shm"):
    try:
        with open(os.path.join(directory, "tmp-{MARKER}"), "w") as f:
            f.write("escaped")
    except OSError as e:
        print(directory, e)
os.unlink({str(ctx["tmp_open"] / "canary.txt")!r})  # the host's /tmp is out of sight
""",
        "print_secret": f"""
found = [f"{{k}}={{v}}" for k, v in os.environ.items() if k == "CODEKILN_TEST_SECRET"]
for pid in ({ctx["harness"]}, os.getppid(), 1, "self"):
    try:
        with open(f"/proc/{{pid}}/environ", "rb") as f:
            text = f.read().decode(errors="replace")
        print(pid, text)
        found += [part for part in text.split("\\0") if part.startswith("CODEKILN_TEST_SECRET")]
    except OSError as e:
        print(pid, e)
for entry in os.listdir("/proc"):
    try:
        with open(f"/proc/{{entry}}/environ", "rb") as f:
            found += [p for p in f.read().decode(errors="replace").split("\\0") if p.startswith("CODEKILN_TEST")]
    except OSError:
        pass
if not found:
    raise LookupError("CODEKILN_TEST_SECRET is nowhere to be seen")
print(found)
""",
        "kill_parent": f"""
import signal
for attempt in (lambda: os.kill({ctx["harness"]}, 9), lambda: os.killpg(os.getpgid({ctx["harness"]}), 9),
                lambda: os.kill(os.getppid(), 9), lambda: os.killpg(os.getpgid(os.getppid()), 9),
                lambda: os.kill(1, 9), lambda: os.kill(-1, 9)):
    try:
        attempt()
    except OSError as e:
        print(e)
raise ProcessLookupError("still here, nothing killed")
""",
        "daemon": f"""
import time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.chdir("/")
        for fd in (0, 1, 2):
            os.close(fd)
        time.sleep(30)
        with open({str(ctx["var_open"] / f"daemon-{MARKER}")!r}, "w") as f:
            f.write("outlived the sandbox")
    os._exit(0)
time.sleep(60)
""",
        "ctypes_tricks": f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
outcomes = []
def attempt(name, ret):
    outcomes.append((name, ret, os.strerror(ctypes.get_errno()) if ret == -1 else "ok"))
attempt("unshare net", libc.unshare(CLONE_NEWNET))
attempt("ptrace parent", libc.ptrace(0x4206, os.getppid(), None, None))  # PTRACE_SEIZE: attach, no stop
attempt("ptrace init", libc.ptrace(0x4206, 1, None, None))
attempt("kill harness", libc.kill({ctx["harness"]}, 9))
try:
    fd = os.open("/proc/1/ns/net", os.O_RDONLY)
    attempt("setns init", libc.setns(fd, 0))
except OSError as e:
    outcomes.append(("open /proc/1/ns/net", -1, str(e)))
# The classic escape: a user namespace of one's own brings capabilities there; use them on the mounts.
attempt("unshare user+mount", libc.unshare(CLONE_NEWUSER | CLONE_NEWNS))
for target in {[str(v) for v in victims] + ["/"]!r}:
    attempt("remount rw " + target, libc.mount(None, target.encode(), None, 32 | 4096, None))
    attempt("umount " + target, libc.umount2(target.encode(), 2))
for directory in {[str(v) for v in victims]!r}:
    try:
        with open(os.path.join(directory, "ctypes-{MARKER}"), "w") as f:
            f.write("escaped")
        outcomes.append(("write " + directory, 0, "ok"))
    except OSError as e:
        outcomes.append(("write " + directory, -1, str(e)))
print(outcomes)
harmless = {ctx["harmless"]!r}  # in bwrap mode PID 1 is bwrap's, inside, with the program's own uid
escaped = [o for o in outcomes if o[0].startswith(("write", "kill", "ptrace", "setns")) and o[1] != -1
           and o[0] not in harmless]
if not escaped:
    raise PermissionError("no trick worked")
print("escaped", escaped)
""",
        "segfault": "import ctypes\nctypes.string_at(0)\n",
    }


def expected_reason(name: str, reason: str) -> bool:
    """Whether a hostile program ended the way its attack should end in the sandbox."""
    exact = {"passing": "passed", "failing": "failed: AssertionError", "memory_bomb": "memory limit",
             "output_flood": "output limit", "infinite_loop": f"timed out after {TIMEOUT}s",
             "daemon": f"timed out after {TIMEOUT}s", "segfault": "killed by signal 11",
             "kill_parent": "killed by signal 9", "print_secret": "failed: LookupError"}
    if name in exact:
        return reason == exact[name]
    if name == "fork_bomb":
        return reason == f"timed out after {TIMEOUT}s" or reason.startswith("failed: ")
    return reason.startswith("failed: ")  # network, writes, deletes, ctypes: the attack's own error


def snapshot(directory: Path) -> dict:
    """Every path under a directory with its mode, size and content hash."""
    state = {}
    for path in sorted(directory.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        state[str(path.relative_to(directory))] = (st.st_mode, st.st_size, digest)
    return state


def marked_processes() -> list[str]:
    """Processes whose command line holds MARKER."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if MARKER.encode() in cmdline:
                found.append(f"{entry}: {cmdline[:200]!r}")
    return found


def primary_address() -> str | None:
    """This machine's outward IPv4 address, if it has one (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.254.254.254", 9))
            return s.getsockname()[0]
    except OSError:
        return None


def namespaces_possible() -> bool:
    """Whether this kernel lets us make a network namespace at all (else only the fallback exists here)."""
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    args = ["unshare", *user, "--net", "true"]
    try:
        return shutil.which("unshare") is not None and subprocess.run(args, capture_output=True).returncode == 0
    except OSError:
        return False


class Listener:
    """A TCP and a UDP socket on all addresses that record whoever reaches them."""

    def __init__(self):
        self.heard: list[str] = []
        self.tcp = socket.create_server(("0.0.0.0", 0))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("0.0.0.0", 0))
        for sock in (self.tcp, self.udp):
            sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()

    def _listen(self):
        while not self.stop.is_set():
            try:
                conn, addr = self.tcp.accept()
                self.heard.append(f"tcp from {addr}")
                conn.close()
            except OSError:
                pass
            try:
                data, addr = self.udp.recvfrom(100)
                self.heard.append(f"udp {data!r} from {addr}")
            except OSError:
                pass

    def close(self):
        self.stop.set()
        self.thread.join()
        self.tcp.close()
        self.udp.close()


@pytest.fixture(scope="module", params=ISOLATING)
def batch(request, tmp_path_factory):
    """Run every hostile program once in one sandbox mode, in one parallel call; yields what the assertions need."""
    mode = request.param
    python, why = python_for(mode)
    if python is None:
        pytest.skip(f"sandbox mode {mode} is not available here: {why}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sandbox, "_python", lambda: python)
        yield from _run_batch(mode, tmp_path_factory)


def _run_batch(mode, tmp_path_factory):
    """The batch in `mode`, with the interpreter already chosen."""
    owned = tmp_path_factory.mktemp("victim")
    tmp_open = Path(f"/tmp/codekiln-victim-{uuid.uuid4().hex}")
    var_open = Path(f"/var/tmp/codekiln-victim-{uuid.uuid4().hex}") if os.path.isdir("/var/tmp") else owned / "var"
    for directory in (owned, tmp_open, var_open):
        directory.mkdir(exist_ok=True)
        (directory / "canary.txt").write_text(f"canary {MARKER}\n")
    for directory in (tmp_open, var_open):  # writable by anyone: only the sandbox's own walls protect them
        directory.chmod(0o777)
        (directory / "canary.txt").chmod(0o666)
    before = {d: snapshot(d) for d in (owned, tmp_open, var_open)}
    listener = Listener()
    os.environ["CODEKILN_TEST_SECRET"] = SECRET
    ctx = {"owned": owned, "tmp_open": tmp_open, "var_open": var_open, "harness": os.getpid(),
           "tcp_port": listener.tcp.getsockname()[1], "udp_port": listener.udp.getsockname()[1],
           "hosts": ["127.0.0.1"] + [a for a in [primary_address()] if a],
           "harmless": ["ptrace parent", "ptrace init"] if mode == "bwrap" else []}
    programs = hostile_programs(ctx)
    try:
        start = time.monotonic()
        results = run_programs([PRELUDE + p for p in programs.values()], timeout=TIMEOUT, workers=2,
                               allow_code_execution=True, sandbox=mode)
        elapsed = time.monotonic() - start
        time.sleep(0.3)  # a UDP datagram or a late connection would have arrived by now
    finally:
        del os.environ["CODEKILN_TEST_SECRET"]
        listener.close()
    yield {"mode": mode, "results": dict(zip(programs, results)), "elapsed": elapsed, "before": before,
           "after": {d: snapshot(d) for d in before}, "heard": listener.heard, "survivors": marked_processes(),
           "ctx": ctx}
    for survivor in marked_processes():  # a failed proof must not leave its attackers running
        try:
            os.kill(int(survivor.split(":")[0]), 9)
        except OSError:
            pass
    for directory in (tmp_open, var_open):
        shutil.rmtree(directory, ignore_errors=True)


NAMES = list(hostile_programs({"owned": Path("/o"), "tmp_open": Path("/t"), "var_open": Path("/v"), "harness": 1,
                               "tcp_port": 1, "udp_port": 1, "hosts": [], "harmless": []}))


@pytest.mark.parametrize("name", NAMES)
def test_each_program_ends_with_a_sensible_reason(batch, name):
    result = batch["results"][name]
    assert expected_reason(name, result.reason), (name, result)
    assert result.passed == (name == "passing")


def test_the_batch_ran_in_parallel_and_the_harness_goes_on(batch):
    assert batch["elapsed"] < 3 * TIMEOUT - 0.5  # three programs run to the timeout: one after another would take 9 s
    again = run_programs(["print(6 * 7)"], allow_code_execution=True, sandbox=batch["mode"])
    assert again[0].passed and again[0].stdout == "42\n"


def test_nothing_outside_the_scratch_dir_changed(batch):
    assert batch["after"] == batch["before"]
    for directory in batch["before"]:
        assert (directory / "canary.txt").read_text() == f"canary {MARKER}\n"
    stray = [p for d in ("/tmp", "/var/tmp", "/dev/shm") if os.path.isdir(d) for p in os.listdir(d) if MARKER in p]
    assert stray == []


def test_no_connection_got_out(batch):
    assert batch["heard"] == []
    assert "reached" not in batch["results"]["network"].stdout


def test_the_parents_secret_stays_secret(batch):
    for name, result in batch["results"].items():
        assert SECRET not in result.stdout and SECRET not in result.stderr, name


def test_no_process_survives(batch):
    assert batch["survivors"] == []
    assert not (batch["ctx"]["var_open"] / f"daemon-{MARKER}").exists()


def test_auto_never_falls_back_to_no_sandbox_where_namespaces_work():
    if not namespaces_possible():
        pytest.skip("this kernel allows no namespaces here")
    assert sandbox.resolve_mode("auto") in ISOLATING


def test_ctypes_tricks_got_nowhere(batch):
    result = batch["results"]["ctypes_tricks"]
    assert result.reason == "failed: PermissionError", result
    assert "escaped" not in result.stdout
