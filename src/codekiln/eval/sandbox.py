"""Running model-written programs in a sandbox: own process, namespaces, read-only filesystem, rlimits.

Each program runs as `python -I program.py` under a short-lived wrapper (`python -I -S -c _WRAPPER`) that
builds the sandbox with unshare(2) and mount(2) through ctypes. How it works, what each layer stops, and the
fallbacks when the kernel refuses namespaces: docs/sandbox.md. The containment proof: tests/eval/test_containment.py.
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
from codekiln.workers import resolve_workers

log = logging.getLogger(__name__)

REFUSAL = ("refusing to execute model-generated code without --allow-code-execution (or "
           "eval.allow_code_execution: true); it runs in codekiln's sandbox, see docs/sandbox.md")
NOBODY = 65534
MAX_PROCESSES = 64
MAX_FILE_BYTES = 16 << 20
MAX_OPEN_FILES = 64
SCRATCH_MB = 256  # the program's cwd is a tmpfs of this size (namespace modes), so it cannot fill the disk
TMP_MB = 64  # each of the fresh /tmp and /dev/shm
GRACE_S = 1.0  # after the program ends, how long leftover holders of its output pipes may keep them open

# The wrapper runs with `python -I -S`, so it starts in ~10 ms and imports nothing but os, sys, resource and
# ctypes. argv: mode, harness pid, scratch dir, python, cpu seconds, address-space bytes, tmpfs dirs, status fd,
# exposures (lines "DIR<tab>CHILD": DIR is hidden under a tmpfs that shows only CHILD, see _exposures).
# It reports on the status fd (closed on exec, so the program cannot forge it): "error STEP: WHY" when the
# sandbox could not be built, else "exit N" / "signal N" for the program's own process.
_WRAPPER = r'''
import os, sys, resource
mode, harness, scratch, exe, cpu, mem, tmpfs, fd, exposures = sys.argv[1:10]
cpu, mem, fd, NOBODY = int(cpu), int(mem), int(fd), 65534
os.set_inheritable(fd, False)
os.umask(0o022)
argv = [exe, "-I", "program.py"]

def fail(step, why):
    os.write(fd, f"error {step}: {why}\n".encode())
    os._exit(70)

def drop_to_nobody():
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)

def limit(processes=MAX_PROCESSES):  # after dropping privileges: setuid checks RLIMIT_NPROC for the new uid
    R = resource
    for res, soft, hard in ((R.RLIMIT_CPU, cpu, cpu + 1), (R.RLIMIT_AS, mem, mem),
                            (R.RLIMIT_NPROC, processes, processes), (R.RLIMIT_FSIZE, MAX_FILE, MAX_FILE),
                            (R.RLIMIT_NOFILE, MAX_FILES, MAX_FILES), (R.RLIMIT_CORE, 0, 0)):
        R.setrlimit(res, (soft, hard))

def processes_of_this_uid():  # without a user namespace of its own, RLIMIT_NPROC counts all of them
    uid, count = os.getuid(), 0
    for entry in os.scandir("/proc"):
        try:
            count += entry.name.isdigit() and entry.stat().st_uid == uid
        except OSError:
            pass
    return count

if mode in ("none", "bwrap"):
    try:
        os.chdir(scratch)
        if os.geteuid() == 0:
            drop_to_nobody()
        limit(processes_of_this_uid() + MAX_PROCESSES)
        if mode == "none":
            os.execve(exe, argv, os.environ)
        dirs = [arg for d in filter(None, tmpfs.split(",")) for arg in ("--tmpfs", d)]
        os.execve(BWRAP, [BWRAP, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
                          "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", *dirs,
                          "--bind", scratch, scratch, "--chdir", scratch, "--", *argv], os.environ)
    except OSError as e:
        fail(mode, e)

import ctypes
libc = ctypes.CDLL(None, use_errno=True)
L = ctypes.c_ulong
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
CLONE_NEWUSER, NAMESPACES = 0x10000000, 0x00020000 | 0x40000000 | 0x20000000 | 0x08000000 | 0x04000000

def check(step, ret):
    if ret == -1:
        fail(step, os.strerror(ctypes.get_errno()))

def mount(src, target, fstype, flags, data=None):
    def enc(s):
        return None if s is None else s.encode()
    check(f"mount {target}", libc.mount(enc(src), enc(target), enc(fstype), L(flags), enc(data)))

def prctl(step, option, arg=0):
    check(step, libc.prctl(option, L(arg), L(0), L(0), L(0)))

# --- the wrapper: namespaces, then PID 1 ------------------------------------------------------------------------
prctl("die with the harness", 1, 9)  # PR_SET_PDEATHSIG
if os.getppid() != int(harness):
    fail("start", "the harness is gone")
try:
    with open(os.path.join(scratch, "program.py"), "rb") as f:
        source = f.read()
    if mode == "userns":
        if os.geteuid() == 0:
            drop_to_nobody()
            prctl("dumpable", 4, 1)  # setuid made us undumpable, which would forbid writing our own uid_map
        uid, gid = os.geteuid(), os.getegid()
        check("unshare", libc.unshare(NAMESPACES | CLONE_NEWUSER))
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
        owner = 0
    else:
        check("unshare", libc.unshare(NAMESPACES))
        owner = NOBODY
    init = os.fork()  # the first child in the new PID namespace is its PID 1
except OSError as e:
    fail("setup", e)
if init:
    os.waitpid(init, 0)  # init reports the verdict; when it ends, the kernel kills everything inside
    os._exit(0)

# --- init: the filesystem view ----------------------------------------------------------------------------------
try:
    prctl("die with the wrapper", 1, 9)
    prctl("undumpable", 4, 0)  # nothing inside may ptrace init or read its /proc entries
    exposed = {}  # DIR -> [(CHILD, O_PATH fd)], opened in this mount namespace before a tmpfs covers DIR
    for line in filter(None, exposures.split("\n")):
        parent, child = line.split("\t")
        exposed.setdefault(parent, []).append((child, os.open(os.path.join(parent, child), os.O_PATH)))

    class MountAttr(ctypes.Structure):
        _fields_ = [("set", ctypes.c_uint64), ("clr", ctypes.c_uint64), ("prop", ctypes.c_uint64),
                    ("userns", ctypes.c_uint64)]
    attr = MountAttr(1 | 2, 0, MS_PRIVATE, 0)  # MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, on every mount
    if libc.syscall(L(442), ctypes.c_long(-100), b"/", L(0x8000), ctypes.byref(attr), L(ctypes.sizeof(attr))):
        mount(None, "/", None, MS_REC | MS_PRIVATE)  # kernels before 5.12: remount each mount read-only
        def mounts():
            with open("/proc/self/mountinfo") as f:
                return [(line.split()[4].encode().decode("unicode_escape"), line.split()[5].split(",")) for line in f]
        for point, opts in mounts():
            keep = sum(bit for opt, bit in (("nodev", MS_NODEV), ("noexec", MS_NOEXEC)) if opt in opts)
            libc.mount(None, point.encode(), None, L(MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | keep), None)
        for point, opts in dict(mounts()).items():  # the last mount on a point is the one in sight
            if "ro" not in opts:
                fail("read-only", point)
    for parent, children in exposed.items():  # e.g. /root (0700) holding the interpreter in /root/.pyenv
        mount("tmpfs", parent, "tmpfs", MS_NOSUID | MS_NODEV, "size=16k,mode=755")
        for child, path_fd in children:
            os.mkdir(os.path.join(parent, child))
            mount(f"/proc/self/fd/{path_fd}", os.path.join(parent, child), None, MS_BIND | MS_REC)
            os.close(path_fd)
    for d in filter(None, tmpfs.split(",")):
        mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, f"size={TMP_MB}m,nr_inodes=16k,mode=1777")
    os.makedirs(scratch, exist_ok=True)
    mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV,
          f"size={SCRATCH_MB}m,nr_inodes=64k,mode=700,uid={owner},gid={owner}")
    for parent in exposed:
        mount(None, parent, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    program = os.path.join(scratch, "program.py")
    with open(program, "wb") as f:
        f.write(source)
    os.chown(program, owner, owner)
    if libc.mount(b"proc", b"/proc", b"proc", L(MS_NOSUID | MS_NODEV | MS_NOEXEC), None):
        mount("tmpfs", "/proc", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=555")  # hide the host's
    to_init, from_child = os.pipe()  # root mode: only init, root outside, may map the child's user namespace
    from_init, to_child = os.pipe()
    child = os.fork()
except OSError as e:
    fail("init", e)

# --- the program's process: nobody, no capabilities, limits, exec --------------------------------------------------
if child == 0:
    try:
        os.close(to_init)
        os.close(to_child)
        os.chdir(scratch)
        if mode == "root":  # a user namespace of its own, so that RLIMIT_NPROC counts this program's processes only
            os.write(from_child, b"u" if libc.unshare(CLONE_NEWUSER) == 0 else b"-")
            os.read(from_init, 1)  # init has mapped nobody to nobody
        prctl("securebits", 28, 0xE3)  # NOROOT and NO_CAP_AMBIENT_RAISE, locked: exec never grants capabilities
        for cap in range(64):
            libc.prctl(24, L(cap), L(0), L(0), L(0))  # PR_CAPBSET_DROP
        if mode == "root":
            drop_to_nobody()
        header, data = (ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()
        check("capset", libc.capset(header, data))  # no capability left, in any namespace
        prctl("no_new_privs", 38, 1)  # setuid binaries gain nothing
        limit()
        os.execve(exe, argv, os.environ)
    except OSError as e:
        fail("exec", e)

# --- init: map the child's user namespace, then reap until the program ends ----------------------------------------
os.close(from_child)
os.close(from_init)
if mode == "root":
    try:
        if os.read(to_init, 1) == b"u":  # nothing (the child died first) or "-" (no user namespace): nothing to map
            for name in ("uid_map", "gid_map"):
                with open(f"/proc/{child}/{name}", "w") as f:
                    f.write(f"{NOBODY} {NOBODY} 1")
        os.write(to_child, b"x")
    except OSError as e:
        os.kill(child, 9)
        fail("user namespace", e)
while True:  # PID 1 reaps orphans until the program's own process ends
    pid, status = os.wait()
    if pid == child:
        break
if os.WIFSIGNALED(status):
    os.write(fd, f"signal {os.WTERMSIG(status)}\n".encode())
else:
    os.write(fd, f"exit {os.WEXITSTATUS(status)}\n".encode())
os._exit(0)
'''


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
                allow_code_execution: bool = False) -> ExecResult:
    """Run one Python program in the sandbox and say how it ended."""
    return run_programs([program], timeout=timeout, workers=1, memory_mb=memory_mb, max_output=max_output,
                        allow_code_execution=allow_code_execution)[0]


def run_programs(programs: list[str], *, timeout: float = 10.0, workers: int = 0, memory_mb: int = 2048,
                 max_output: int = 65536, allow_code_execution: bool = False,
                 progress: Callable[[int], None] | None = None) -> list[ExecResult]:
    """Run Python programs in the sandbox, `workers` at a time (0: all cores); results in program order.

    `progress`, when given, is called with 1 as each program finishes (it fits `task_progress`'s advance)."""
    if not allow_code_execution:
        raise UserError(REFUSAL)
    if not programs:
        return []
    mode = _mode()
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


def isolation() -> dict[str, str]:
    """What this machine's sandbox gives, layer by layer (the mode is probed once per process)."""
    mode = _mode()
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
    return {"mode": "fallback (no namespaces on this machine)", "warning": _FALLBACK_WARNING,
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


_FALLBACK_WARNING = ("this kernel allows no namespaces here and bubblewrap is not installed: model-written "
                     "programs run with rlimits only, sharing the network and filesystem (see docs/sandbox.md)")
_forced_mode: str | None = None  # tests set this to exercise a fallback
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
        argv = [exe, "-I", "-S", "-c", _wrapper_source(), mode, str(os.getpid()), scratch, exe,
                str(int(limits.timeout) + 1), str(limits.memory_mb << 20), ",".join(_tmpfs_dirs()), str(status_w),
                _exposures(exe) if mode in ("root", "userns") else ""]
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
        proc.stdout.close()
        proc.stderr.close()
    out, err = (bytes(b[:cap]) for b in buffers.values())
    return outcome, out, err


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

def _mode() -> str:
    """The strongest sandbox this machine supports (tests may force one)."""
    return _forced_mode or _detect_mode()


def _candidates() -> list[str]:
    """Sandbox modes to try, strongest first."""
    return (["root"] if os.geteuid() == 0 else []) + ["userns"] + (["bwrap"] if _bwrap() else [])


@functools.cache
def _detect_mode() -> str:
    """Probe once: namespaces as root, namespaces in a user namespace, bubblewrap; else the rlimit fallback."""
    limits = _Limits(10.0, 512, 4096)
    for mode in _candidates():
        for _ in range(2):  # a second try, so that one unlucky start does not weaken a whole evaluation
            result = _run_safely("print(open('/proc/self/uid_map').read().split())\n", limits, mode, _Running())
            if result.passed:
                _probe["own_userns"] = result.stdout.startswith(f"['{NOBODY}', '{NOBODY}', '1']")
                return mode
            log.debug("sandbox mode %s unavailable: %s %s", mode, result.reason, result.stderr[-500:])
    log.warning("codekiln sandbox: %s", _FALLBACK_WARNING)
    return "none"


def _python() -> str:
    """The interpreter that runs programs: the harness's own, so programs see the same packages."""
    return sys.executable


@functools.cache
def _bwrap() -> str | None:
    """Path of bubblewrap, when installed."""
    return shutil.which("bwrap")


@functools.cache
def _wrapper_source() -> str:
    """The wrapper with this module's constants filled in."""
    constants = (f"MAX_PROCESSES, MAX_FILE, MAX_FILES = {MAX_PROCESSES}, {MAX_FILE_BYTES}, {MAX_OPEN_FILES}\n"
                 f"SCRATCH_MB, TMP_MB, BWRAP = {SCRATCH_MB}, {TMP_MB}, {_bwrap()!r}\n")
    return constants + _WRAPPER


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
