"""Running model-written programs in a sandbox: own process, namespaces, read-only filesystem, rlimits.

Each program runs as `python -I program.py` under a short-lived wrapper (`python -I -S sandbox_child.py`)
that builds the sandbox with unshare(2) and mount(2) through ctypes, or with bubblewrap. How it works, what
each layer stops, the modes, and the refusal when no isolating mode works: docs/sandbox.md. The containment
proof: tests/eval/test_containment.py.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from codekiln.errors import UserError
from codekiln.eval import sandbox_child
from codekiln.eval.sandbox_child import MAX_FILE_BYTES, MAX_OPEN_FILES, MAX_PROCESSES, NOBODY, SCRATCH_MB
from codekiln.workers import resolve_workers

log = logging.getLogger(__name__)

REFUSAL = ("refusing to execute model-generated code without --allow-code-execution (or "
           "eval.allow_code_execution: true); it runs in codekiln's sandbox, see docs/sandbox.md")
GRACE_S = 1.0  # after the program ends, how long leftover holders of its output pipes may keep them open


@dataclass(frozen=True)
class ExecResult:
    """How one program ended: status is passed, failed, timeout, or error (the sandbox itself failed)."""

    status: str
    reason: str
    duration_s: float
    stdout: str
    stderr: str

    @property
    def passed(self) -> bool:
        """True when the program exited 0 within its limits."""
        return self.status == "passed"


def run_program(program: str, *, timeout: float = 10.0, memory_mb: int = 2048, max_output: int = 65536,
                allow_code_execution: bool = False, sandbox: str = "auto") -> ExecResult:
    """Run one Python program in the sandbox and say how it ended."""
    return run_programs([program], timeout=timeout, workers=1, memory_mb=memory_mb, max_output=max_output,
                        allow_code_execution=allow_code_execution, sandbox=sandbox)[0]


def run_programs(programs: list[str], *, timeout: float = 10.0, workers: int = 0, memory_mb: int = 2048,
                 max_output: int = 65536, allow_code_execution: bool = False, sandbox: str = "auto",
                 progress: Callable[[int], None] | None = None) -> list[ExecResult]:
    """Run Python programs in the sandbox, `workers` at a time (0: all cores); results in program order.

    `sandbox` is a mode of MODES (resolve_mode: "auto" refuses when no isolating mode works). `progress`,
    when given, is called with 1 as each program finishes (it fits `task_progress`'s advance)."""
    if not allow_code_execution:
        raise UserError(REFUSAL)
    mode = resolve_mode(sandbox)
    if not programs:
        return []
    if mode == "none":
        log.warning("codekiln sandbox: %s", _NONE_WARNING)
    limits = _Limits(float(timeout), int(memory_mb), int(max_output))
    results: list[ExecResult | None] = [None] * len(programs)
    running = _Running()
    pool = ThreadPoolExecutor(min(resolve_workers(workers), len(programs)), thread_name_prefix="sandbox")
    try:
        futures = {pool.submit(_run_safely, program, limits, mode, running): i for i, program in enumerate(programs)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            if progress is not None:
                progress(1)
    except BaseException:  # Ctrl-C included: no sandbox outlives the batch
        pool.shutdown(wait=False, cancel_futures=True)
        running.stop()
        raise
    pool.shutdown()
    return results  # type: ignore[return-value]


def isolation(sandbox: str = "auto") -> dict[str, str]:
    """What the sandbox gives in a mode (resolve_mode's), layer by layer (modes are probed once per process)."""
    mode = resolve_mode(sandbox)
    limits = (f"CPU time timeout+1 s, address space memory_mb, {MAX_PROCESSES} processes, "
              f"{MAX_FILE_BYTES >> 20} MB per file, {MAX_OPEN_FILES} open files, no core dumps")
    common = {"process": "own session and process group, killed as a whole at the timeout",
              "environment": "empty (PATH, HOME, TMPDIR, LANG only); python -I", "limits": limits}
    namespaces = {
        "network": "netns: a new network namespace holding only a loopback that is down",
        "pid": "pidns: own PID namespace under a codekiln init; the kernel kills all inside when it ends",
        "filesystem": (f"mount namespace: every mount read-only and nosuid; fresh tmpfs on /tmp and /dev/shm; "
                       f"cwd a fresh {SCRATCH_MB} MB tmpfs at the scratch path; own /proc"),
        "ipc": "own IPC and UTS namespaces",
    }
    hidden = sorted({line.split("\t")[0] for line in _exposures(_python()).splitlines()})
    if hidden and mode in ("root", "userns"):
        namespaces["filesystem"] += f"; {', '.join(hidden)} hidden but for the way to Python"
    if mode == "root":
        own = (" in a user namespace of its own (so the process limit counts its processes only)"
               if _probe.get("own_userns") else " (the process limit counts every nobody process)")
        return {"mode": "namespaces (root, unshare(2))", **namespaces,
                "user": f"nobody (uid {NOBODY}){own}; no capabilities, no_new_privs", **common}
    if mode == "userns":
        outer = NOBODY if os.geteuid() == 0 else os.geteuid()
        return {"mode": "namespaces (user namespace, unshare(2))", **namespaces,
                "user": f"uid 0 of a user namespace = uid {outer} outside; every capability dropped, no_new_privs",
                **common}
    if mode == "bwrap":
        return {"mode": f"bubblewrap ({_bwrap()})", **namespaces,
                "network": "netns (bwrap): a new network namespace with nothing but its own loopback",
                "filesystem": "bwrap: / read-only, fresh tmpfs on /tmp and /dev/shm, own /dev and /proc, "
                              "scratch dir bound read-write",
                "user": "nobody" if os.geteuid() == 0 else f"uid {os.geteuid()} (bwrap drops capabilities)",
                **common}
    return {"mode": "none (no isolation, chosen explicitly)", "warning": _NONE_WARNING,
            "network": "NOT isolated: programs can reach the network",
            "pid": "process group; afterwards every process whose cwd, session, group or output pipe is the "
                   "sample's is killed (a /proc scan)",
            "filesystem": "NOT isolated: cwd is a fresh scratch dir; the program can write wherever its uid may",
            "user": f"nobody (uid {NOBODY})" if os.geteuid() == 0 else f"uid {os.geteuid()} (the harness's own)",
            **common}


# --- one program ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Limits:
    timeout: float
    memory_mb: int
    max_output: int


class _Running:
    """The wrapper pids of a batch, so that an interrupted harness can kill every sandbox it started."""

    def __init__(self):
        self.lock = threading.Lock()
        self.pids: set[int] = set()
        self.stopped = False

    def add(self, pid: int) -> None:
        with self.lock:
            self.pids.add(pid)
            if self.stopped:
                _kill_group(pid)

    def discard(self, pid: int) -> None:
        """Called before the process is reaped, so a kill can never reach a recycled pid."""
        with self.lock:
            self.pids.discard(pid)

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
            for pid in self.pids:
                _kill_group(pid)


MODES = ("auto", "root", "userns", "bwrap", "none")
_FIXES = ("install bubblewrap (apt-get install bubblewrap), allow user namespaces "
          "(sysctl kernel.unprivileged_userns_clone=1), or pass --sandbox none to run model-written code "
          "without isolation at your own risk (see docs/sandbox.md)")
_NONE_WARNING = ("sandbox mode none, chosen explicitly: model-written programs run with rlimits only, sharing "
                 "the network and filesystem (see docs/sandbox.md)")
_CHILD = os.path.abspath(sandbox_child.__file__)  # run as a script: `python -I -S` imports nothing of codekiln
_probe: dict[str, bool] = {}  # what the mode probe saw
_root_lock = threading.Lock()
_root: tuple[int, str] | None = None  # (owning pid, private temp root)


def _run_safely(program: str, limits: _Limits, mode: str, running: _Running) -> ExecResult:
    """_run, turned into an "error" result if the harness side itself fails: the batch always goes on."""
    try:
        return _run(program, limits, mode, running)
    except Exception as exc:  # noqa: BLE001 - one sample's sandbox failure must not stop the batch
        log.debug("sandbox failed", exc_info=True)
        return ExecResult("error", f"sandbox error: {type(exc).__name__}: {exc}", 0.0, "", "")


def _run(program: str, limits: _Limits, mode: str, running: _Running) -> ExecResult:
    """Run one program: scratch dir in, verdict out, scratch dir removed."""
    scratch = tempfile.mkdtemp(prefix="s-", dir=_private_root())
    try:
        path = os.path.join(scratch, "program.py")
        with open(path, "w", encoding="utf-8", errors="surrogatepass") as fh:
            fh.write(program)
        os.chmod(path, 0o644)
        if os.geteuid() == 0:
            os.chown(scratch, NOBODY, NOBODY)  # the program's own dir in the fallbacks; readable when root drops first
        return _execute(scratch, limits, mode, running)
    finally:
        shutil.rmtree(scratch, onerror=_force_remove)


def _execute(scratch: str, limits: _Limits, mode: str, running: _Running) -> ExecResult:
    """Start the wrapper, read its output within the limits, and turn what happened into an ExecResult."""
    exe = _python()
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8"}
    status_r, status_w = os.pipe()
    try:
        os.set_blocking(status_r, False)
        argv = [exe, "-I", "-S", _CHILD, mode, str(os.getpid()), scratch, exe,
                str(int(limits.timeout) + 1), str(limits.memory_mb << 20), ",".join(_tmpfs_dirs()), str(status_w),
                _exposures(exe) if mode in ("root", "userns") else "", _bwrap() or ""]
        start = time.monotonic()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=env, cwd=scratch, start_new_session=True, pass_fds=(status_w,))
        finally:
            os.close(status_w)
        running.add(proc.pid)
        outcome, out, err = _collect(proc, start + limits.timeout, limits.max_output, mode, scratch, running)
        duration = time.monotonic() - start
        try:
            verdict = os.read(status_r, 4096).decode(errors="replace").splitlines()
        except BlockingIOError:  # killed before it could say anything
            verdict = []
    finally:
        os.close(status_r)
    stdout = out.decode("utf-8", errors="replace")
    stderr = err.decode("utf-8", errors="replace")
    if outcome == "timeout":
        return ExecResult("timeout", f"timed out after {limits.timeout}s", duration, stdout, stderr)
    if outcome == "output":
        return ExecResult("failed", "output limit", duration, stdout, stderr)
    errors = [line for line in verdict if line.startswith("error ")]
    if errors:
        return ExecResult("error", f"sandbox error: {errors[0][6:]}", duration, stdout, stderr)
    code = proc.returncode
    for line in verdict:
        kind, _, value = line.partition(" ")
        if kind in ("exit", "signal") and value.isdigit():
            code = int(value) if kind == "exit" else -int(value)
    if mode == "bwrap" and 128 < code < 160:  # bwrap's init reports a signal death as 128 + signal
        code = 128 - code
    if code == 0:
        return ExecResult("passed", "passed", duration, stdout, stderr)
    return ExecResult("failed", _failure_reason(code, stderr), duration, stdout, stderr)


def _collect(proc, deadline: float, cap: int, mode: str, scratch: str, running: _Running) -> tuple[str, bytes, bytes]:
    """Read stdout and stderr until both close, the deadline passes, or one exceeds the cap; then kill and reap.

    Returns (outcome, stdout, stderr), outcome being "done", "timeout" or "output"."""
    buffers = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    pipe_inodes = {os.fstat(fd).st_ino for fd in buffers}
    selector = selectors.DefaultSelector()
    for fd in buffers:
        selector.register(fd, selectors.EVENT_READ)
    try:  # wakes the loop the moment the wrapper ends, even while something else still holds the pipes
        pidfd = os.pidfd_open(proc.pid)
        selector.register(pidfd, selectors.EVENT_READ)
    except (AttributeError, OSError):
        pidfd = -1
    outcome, open_fds, exited = "done", set(buffers), False
    try:
        while (open_fds or not exited) and outcome == "done":
            now = time.monotonic()
            if now >= deadline:
                outcome = "done" if exited else "timeout"
                break
            for key, _ in selector.select(deadline - now if pidfd >= 0 else min(deadline - now, 0.05)):
                if key.fd == pidfd:
                    selector.unregister(pidfd)
                    continue
                data = os.read(key.fd, 65536)
                if not data:
                    selector.unregister(key.fd)
                    open_fds.discard(key.fd)
                    continue
                buf = buffers[key.fd]
                buf += data[:cap + 1 - len(buf)]
                if len(buf) > cap:
                    outcome = "output"
                    break
            if not exited and _has_exited(proc.pid):
                # The program is over. Whatever still holds its pipes outlived it (only the fallback has no PID
                # namespace to end them): kill those, and give the last bytes a moment.
                exited = True
                if mode == "none":
                    _kill_leftovers(proc.pid, scratch, pipe_inodes)
                deadline = min(deadline, time.monotonic() + GRACE_S)
    finally:
        selector.close()
        if pidfd >= 0:
            os.close(pidfd)
        _kill_group(proc.pid)  # not reaped yet (see _has_exited), so the pid cannot have been reused
        running.discard(proc.pid)
        proc.wait()
        if mode == "none":
            _kill_leftovers(proc.pid, scratch, pipe_inodes)
        else:
            _await_group_end(proc.pid, time.monotonic() + GRACE_S)
        proc.stdout.close()
        proc.stderr.close()
    out, err = (bytes(b[:cap]) for b in buffers.values())
    return outcome, out, err


def _await_group_end(pgid: int, deadline: float) -> None:
    """Wait until the killed sandbox's process group holds no live process: its PID 1 (a member) ends only once
    the kernel has killed everything in its PID namespace, so a returned result leaves nothing running."""
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        except PermissionError:  # a member we may not signal is still a member
            pass
        live = False
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != b"Z":  # a zombie is over; its reaper may be slow
                live = True
                break
        if not live:
            return
        time.sleep(0.005)


def _has_exited(pid: int) -> bool:
    """Whether a child has ended, without reaping it: until it is reaped its pid (and group) cannot be reused."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _failure_reason(code: int, stderr: str) -> str:
    """A short, stable reason for a non-zero ending: the exception's name when Python printed a traceback."""
    if code < 0 and -code != signal.SIGINT:  # Python dies of SIGINT after a KeyboardInterrupt traceback
        return {signal.SIGXCPU: "cpu time limit"}.get(-code, f"killed by signal {-code}")
    lines = stderr.splitlines()
    if any(line.startswith("Traceback (most recent call last)") or line.startswith("  File ") for line in lines):
        for line in reversed(lines):
            name = line.split(":", 1)[0].strip()
            if line[:1].isalpha() and name.replace(".", "").replace("_", "").isalnum():
                name = name.rsplit(".", 1)[-1]
                return "memory limit" if name == "MemoryError" else f"failed: {name}"
    return f"exit code {code}" if code > 0 else f"killed by signal {-code}"


# --- killing -------------------------------------------------------------------------------------------------

def _kill_group(pid: int) -> None:
    """SIGKILL the wrapper's whole process group (in namespace modes, its init dies with it and takes the rest)."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _kill_leftovers(leader: int, scratch: str, pipe_inodes: set[int]) -> None:
    """Fallback containment without a PID namespace: SIGKILL every process of the sample's uid that is in its
    session or process group, has its cwd inside the scratch dir, or holds one of its output pipes."""
    uid = NOBODY if os.geteuid() == 0 else os.geteuid()
    pipes = {f"pipe:[{inode}]" for inode in pipe_inodes}
    me = os.getpid()
    for _ in range(5):  # a process may fork while we scan; go round until a scan finds nothing
        found = False
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) in (me, leader):
                continue
            pid = int(entry.name)
            try:
                if entry.stat().st_uid != uid:
                    continue
                with open(f"/proc/{pid}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[1].split()
                mine = leader in (int(fields[2]), int(fields[3]))  # process group, session
                cwd = os.readlink(f"/proc/{pid}/cwd")
                mine = mine or cwd == scratch or cwd.startswith(scratch + "/")
                if not mine:
                    mine = any(os.readlink(f"/proc/{pid}/fd/{fd}") in pipes for fd in os.listdir(f"/proc/{pid}/fd"))
            except OSError:
                continue
            if mine:
                found = True
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if not found:
            return


# --- the sandbox's mode and its surroundings ---------------------------------------------------------------

def _candidates() -> list[str]:
    """Isolating modes to try, strongest first."""
    return (["root"] if os.geteuid() == 0 else []) + ["userns"] + (["bwrap"] if _bwrap() else [])


def resolve_mode(requested: str = "auto") -> str:
    """The mode programs will run in: `requested` when it works here, or for "auto" the strongest isolating one.

    Raises UserError (one line: what failed, and the fixes) when no isolating mode works, or when the mode
    asked for does not; `none` is never chosen, only taken when asked for by name. Callers that generate
    first should call this before generating, so a machine without a sandbox fails fast."""
    if requested not in MODES:
        raise UserError(f"unknown sandbox mode {requested!r}; choose one of {', '.join(MODES)}")
    if requested == "none":
        return "none"
    if requested != "auto":
        why = _why_not(requested)
        if why is None:
            return requested
        raise UserError(f"sandbox mode {requested} does not work here ({why}); {_FIXES}")
    failures = []
    for mode in _candidates():
        why = _why_not(mode)
        if why is None:
            return mode
        failures.append(f"{mode}: {why}")
    if not _bwrap():
        failures.append("bwrap: bubblewrap is not installed")
    raise UserError(f"no isolating sandbox works here ({'; '.join(failures)}); {_FIXES}")


def _mode() -> str:
    """The mode "auto" resolves to on this machine."""
    return resolve_mode("auto")


def _why_not(mode: str) -> str | None:
    """None when an isolating mode works here, else why not."""
    if mode == "bwrap" and not _bwrap():
        return "bubblewrap is not installed"
    return _probe_mode(mode, _python())


@functools.cache
def _probe_mode(mode: str, python: str) -> str | None:
    """None when `mode` runs a trivial program with this interpreter, else why not (probed once per process)."""
    limits = _Limits(10.0, 512, 4096)
    why = "no result"
    for _ in range(2):  # a second try, so that one unlucky start does not refuse a whole evaluation
        result = _run_safely("print(open('/proc/self/uid_map').read().split())\n", limits, mode, _Running())
        if result.passed:
            if mode == "root":
                _probe["own_userns"] = result.stdout.startswith(f"['{NOBODY}', '{NOBODY}', '1']")
            return None
        why = result.reason.removeprefix("sandbox error: ")
        if result.status != "error" and result.stderr.strip():
            why += f": {result.stderr.strip().splitlines()[-1]}"
        log.debug("sandbox mode %s unavailable: %s %s", mode, result.reason, result.stderr[-500:])
    return why


def check_harness_errors(results: list[ExecResult], mode: str) -> None:
    """UserError when most programs ended in a sandbox error rather than a verdict on the code: a score made of
    them (pass@k = 0) would measure the machine, not the model."""
    errors = [r for r in results if r.status == "error"]
    if results and 2 * len(errors) > len(results):
        raise UserError(f"{len(errors)} of {len(results)} programs ended in a sandbox error, not a test result, "
                        f"in sandbox mode {mode} (first: {errors[0].reason}); no score was written: "
                        f"see docs/sandbox.md")


def _python() -> str:
    """The interpreter that runs programs: the harness's own, so programs see the same packages."""
    return sys.executable


@functools.cache
def _bwrap() -> str | None:
    """Path of bubblewrap, when installed."""
    return shutil.which("bwrap")


@functools.cache
def _tmpfs_dirs() -> tuple[str, ...]:
    """/tmp and /dev/shm, each unless Python itself lives there (a fresh tmpfs would hide it)."""
    python = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.executable, _python())}
    return tuple(d for d in ("/tmp", "/dev/shm")
                 if os.path.isdir(d) and not any(p == d or p.startswith(d + "/") for p in python))


@functools.cache
def _exposures(exe: str) -> str:
    """Directories on the way to the interpreter that the sandboxed uid may not enter (root's pyenv under a
    0700 /root): the wrapper covers each with a tmpfs showing only the next directory towards Python."""
    uid = NOBODY if os.geteuid() == 0 else os.geteuid()
    needed = {os.path.dirname(os.path.realpath(exe))}
    if exe == sys.executable:
        needed |= {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    lines = set()
    for path in needed:
        parts = path.split("/")
        for depth in range(1, len(parts) - 1):
            parent = "/".join(parts[:depth]) or "/"
            st = os.stat(parent)
            bit = 0o100 if st.st_uid == uid else 0o010 if st.st_gid == uid else 0o001
            if not st.st_mode & bit and "\t" not in path and "\n" not in path:
                lines.add((depth, parent, parts[depth]))
    return "\n".join(f"{parent}\t{child}" for _, parent, child in sorted(lines))


def _private_root() -> str:
    """This process's private temp root for scratch dirs (0711: a sandboxed uid may enter only its own dir)."""
    global _root
    with _root_lock:
        if _root is None or _root[0] != os.getpid():  # a forked harness makes its own
            path = tempfile.mkdtemp(prefix="codekiln-sandbox-")
            os.chmod(path, 0o711)
            _root = (os.getpid(), path)
            atexit.register(shutil.rmtree, path, ignore_errors=True)
        return _root[1]


def _force_remove(function, path, _exc_info) -> None:
    """rmtree's error handler: a program may leave a directory without write permission; grant it and retry."""
    try:
        os.chmod(os.path.dirname(path), 0o700)
        function(path)
    except OSError:
        pass
