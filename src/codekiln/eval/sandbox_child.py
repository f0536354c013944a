"""The sandbox's child program: builds the sandbox around one model-written program, then execs it.

The harness (codekiln.eval.sandbox) runs this file as a script, `python -I -S sandbox_child.py ARGS`, so it
starts in ~10 ms and imports nothing but os, sys, resource and ctypes; the harness imports it only for the
limits below, which both sides share. How the layers work: docs/sandbox.md.

argv: mode, harness pid, scratch dir, python, cpu seconds, address-space bytes, tmpfs dirs (comma-separated),
status fd, exposures (lines "DIR<tab>CHILD": DIR is hidden under a tmpfs that shows only CHILD), bubblewrap path.
The child reports on the status fd (closed on exec, so the program cannot forge it): "error STEP: WHY" when the
sandbox could not be built, else "exit N" / "signal N" for the program's own process.
"""

import os
import resource
import sys

NOBODY = 65534
MAX_PROCESSES = 64
MAX_FILE_BYTES = 16 << 20
MAX_OPEN_FILES = 64
SCRATCH_MB = 256  # the program's cwd is a tmpfs of this size (namespace modes), so it cannot fill the disk
TMP_MB = 64  # each of the fresh /tmp and /dev/shm

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
CLONE_NEWUSER = 0x10000000
NAMESPACES = 0x00020000 | 0x40000000 | 0x20000000 | 0x08000000 | 0x04000000  # mount, net, pid, ipc, uts


class Child:
    """One sandbox being built: the arguments, the status fd, and the libc calls it makes."""

    def __init__(self, argv: list[str]):
        (self.mode, harness, self.scratch, self.exe, cpu, mem, tmpfs, fd, self.exposures,
         self.bwrap) = argv[:10]
        self.harness, self.cpu, self.mem, self.fd = int(harness), int(cpu), int(mem), int(fd)
        self.tmpfs = [d for d in tmpfs.split(",") if d]
        self.argv = [self.exe, "-I", "program.py"]
        self.libc = None

    def fail(self, step, why):
        """Report that the sandbox could not be built, and end."""
        os.write(self.fd, f"error {step}: {why}\n".encode())
        os._exit(70)

    def limit(self, processes=MAX_PROCESSES):
        """The rlimits; after dropping privileges, since setuid checks RLIMIT_NPROC for the new uid."""
        r = resource
        for res, soft, hard in ((r.RLIMIT_CPU, self.cpu, self.cpu + 1), (r.RLIMIT_AS, self.mem, self.mem),
                                (r.RLIMIT_NPROC, processes, processes),
                                (r.RLIMIT_FSIZE, MAX_FILE_BYTES, MAX_FILE_BYTES),
                                (r.RLIMIT_NOFILE, MAX_OPEN_FILES, MAX_OPEN_FILES), (r.RLIMIT_CORE, 0, 0)):
            r.setrlimit(res, (soft, hard))

    # --- the modes without namespaces of our own: none, bwrap ----------------------------------------------

    def exec_plain(self):
        """`none` and `bwrap`: limits, nobody when root, then the program (or bubblewrap around it)."""
        try:
            os.chdir(self.scratch)
            if os.geteuid() == 0:
                drop_to_nobody()
            self.limit(processes_of_this_uid() + MAX_PROCESSES)
            if self.mode == "none":
                os.execve(self.exe, self.argv, os.environ)
            dirs = [arg for d in self.tmpfs for arg in ("--tmpfs", d)]
            # No --new-session: bwrap's PID 1 stays in our process group, so the harness's kill reaches it at
            # once (and its PID namespace with it); the group's session has no terminal to inject into.
            os.execve(self.bwrap, [self.bwrap, "--unshare-all", "--die-with-parent",
                                   "--cap-drop", "ALL", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                                   *dirs, "--bind", self.scratch, self.scratch, "--chdir", self.scratch,
                                   "--", *self.argv], os.environ)
        except OSError as e:
            self.fail(self.mode, e)

    # --- namespace modes: root, userns ---------------------------------------------------------------------

    def check(self, step, ret):
        """fail() when a libc call returned -1."""
        if ret == -1:
            import ctypes
            self.fail(step, os.strerror(ctypes.get_errno()))

    def mount(self, src, target, fstype, flags, data=None):
        """mount(2), failing the sandbox when it is refused."""
        import ctypes

        def enc(s):
            return None if s is None else s.encode()
        self.check(f"mount {target}", self.libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags),
                                                      enc(data)))

    def prctl(self, step, option, arg=0):
        """prctl(2), failing the sandbox when it is refused."""
        import ctypes
        u = ctypes.c_ulong
        self.check(step, self.libc.prctl(option, u(arg), u(0), u(0), u(0)))

    def enter_namespaces(self):
        """unshare(2), then fork: the wrapper waits for init (PID 1 of the new PID namespace) and returns
        only in init, with the owner of the scratch tmpfs."""
        self.prctl("die with the harness", 1, 9)  # PR_SET_PDEATHSIG
        if os.getppid() != self.harness:
            self.fail("start", "the harness is gone")
        try:
            with open(os.path.join(self.scratch, "program.py"), "rb") as f:
                self.source = f.read()
            if self.mode == "userns":
                if os.geteuid() == 0:
                    drop_to_nobody()
                    self.prctl("dumpable", 4, 1)  # setuid made us undumpable, which forbids writing our uid_map
                uid, gid = os.geteuid(), os.getegid()
                self.check("unshare", self.libc.unshare(NAMESPACES | CLONE_NEWUSER))
                for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
                    with open(f"/proc/self/{name}", "w") as f:
                        f.write(text)
                owner = 0
            else:
                self.check("unshare", self.libc.unshare(NAMESPACES))
                owner = NOBODY
            init = os.fork()  # the first child in the new PID namespace is its PID 1
        except OSError as e:
            self.fail("setup", e)
        if init:
            os.waitpid(init, 0)  # init reports the verdict; when it ends, the kernel kills everything inside
            os._exit(0)
        return owner

    def make_read_only(self):
        """Every mount read-only and nosuid, with private propagation."""
        import ctypes
        u = ctypes.c_ulong

        class MountAttr(ctypes.Structure):
            _fields_ = [("set", ctypes.c_uint64), ("clr", ctypes.c_uint64), ("prop", ctypes.c_uint64),
                        ("userns", ctypes.c_uint64)]
        attr = MountAttr(1 | 2, 0, MS_PRIVATE, 0)  # MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, on every mount
        if not self.libc.syscall(u(442), ctypes.c_long(-100), b"/", u(0x8000), ctypes.byref(attr),
                                 u(ctypes.sizeof(attr))):
            return
        self.mount(None, "/", None, MS_REC | MS_PRIVATE)  # kernels before 5.12: remount each mount read-only

        def mounts():
            with open("/proc/self/mountinfo") as f:
                return [(line.split()[4].encode().decode("unicode_escape"), line.split()[5].split(","))
                        for line in f]
        for point, opts in mounts():
            keep = sum(bit for opt, bit in (("nodev", MS_NODEV), ("noexec", MS_NOEXEC)) if opt in opts)
            self.libc.mount(None, point.encode(), None, u(MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | keep), None)
        for point, opts in dict(mounts()).items():  # the last mount on a point is the one in sight
            if "ro" not in opts:
                self.fail("read-only", point)

    def build_filesystem(self, owner):
        """In init: the filesystem view (read-only, fresh tmpfs dirs, the scratch tmpfs, own /proc)."""
        self.prctl("die with the wrapper", 1, 9)
        self.prctl("undumpable", 4, 0)  # nothing inside may ptrace init or read its /proc entries
        exposed = {}  # DIR -> [(CHILD, O_PATH fd)], opened in this mount namespace before a tmpfs covers DIR
        for line in filter(None, self.exposures.split("\n")):
            parent, child = line.split("\t")
            exposed.setdefault(parent, []).append((child, os.open(os.path.join(parent, child), os.O_PATH)))
        self.make_read_only()
        for parent, children in exposed.items():  # e.g. /root (0700) holding the interpreter in /root/.pyenv
            self.mount("tmpfs", parent, "tmpfs", MS_NOSUID | MS_NODEV, "size=16k,mode=755")
            for child, path_fd in children:
                os.mkdir(os.path.join(parent, child))
                self.mount(f"/proc/self/fd/{path_fd}", os.path.join(parent, child), None, MS_BIND | MS_REC)
                os.close(path_fd)
        for d in self.tmpfs:
            self.mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, f"size={TMP_MB}m,nr_inodes=16k,mode=1777")
        os.makedirs(self.scratch, exist_ok=True)
        self.mount("tmpfs", self.scratch, "tmpfs", MS_NOSUID | MS_NODEV,
                   f"size={SCRATCH_MB}m,nr_inodes=64k,mode=700,uid={owner},gid={owner}")
        for parent in exposed:
            self.mount(None, parent, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        program = os.path.join(self.scratch, "program.py")
        with open(program, "wb") as f:
            f.write(self.source)
        os.chown(program, owner, owner)
        import ctypes
        if self.libc.mount(b"proc", b"/proc", b"proc", ctypes.c_ulong(MS_NOSUID | MS_NODEV | MS_NOEXEC), None):
            self.mount("tmpfs", "/proc", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=555")  # hide host's

    def exec_program(self, from_child, from_init):
        """In the program's process: nobody, no capabilities, limits, exec."""
        import ctypes
        u = ctypes.c_ulong
        try:
            os.chdir(self.scratch)
            if self.mode == "root":  # a user namespace of its own, so RLIMIT_NPROC counts this program's processes
                os.write(from_child, b"u" if self.libc.unshare(CLONE_NEWUSER) == 0 else b"-")
                os.read(from_init, 1)  # init has mapped nobody to nobody
            self.prctl("securebits", 28, 0xE3)  # NOROOT and NO_CAP_AMBIENT_RAISE, locked: exec grants nothing
            for cap in range(64):
                self.libc.prctl(24, u(cap), u(0), u(0), u(0))  # PR_CAPBSET_DROP
            if self.mode == "root":
                drop_to_nobody()
            header, data = (ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()
            self.check("capset", self.libc.capset(header, data))  # no capability left, in any namespace
            self.prctl("no_new_privs", 38, 1)  # setuid binaries gain nothing
            self.limit()
            os.execve(self.exe, self.argv, os.environ)
        except OSError as e:
            self.fail("exec", e)

    def run_namespaced(self):
        """`root` and `userns`: namespaces, init, the program's process; init reports how it ended."""
        import ctypes
        self.libc = ctypes.CDLL(None, use_errno=True)
        owner = self.enter_namespaces()
        try:
            self.build_filesystem(owner)
            to_init, from_child = os.pipe()  # root mode: only init, root outside, may map the child's user namespace
            from_init, to_child = os.pipe()
            child = os.fork()
        except OSError as e:
            self.fail("init", e)
        if child == 0:
            os.close(to_init)
            os.close(to_child)
            self.exec_program(from_child, from_init)
        os.close(from_child)
        os.close(from_init)
        if self.mode == "root":
            try:
                if os.read(to_init, 1) == b"u":  # nothing (the child died first) or "-" (no user namespace)
                    for name in ("uid_map", "gid_map"):
                        with open(f"/proc/{child}/{name}", "w") as f:
                            f.write(f"{NOBODY} {NOBODY} 1")
                os.write(to_child, b"x")
            except OSError as e:
                os.kill(child, 9)
                self.fail("user namespace", e)
        while True:  # PID 1 reaps orphans until the program's own process ends
            pid, status = os.wait()
            if pid == child:
                break
        if os.WIFSIGNALED(status):
            os.write(self.fd, f"signal {os.WTERMSIG(status)}\n".encode())
        else:
            os.write(self.fd, f"exit {os.WEXITSTATUS(status)}\n".encode())
        os._exit(0)


def drop_to_nobody():
    """Become nobody: no supplementary groups, then gid, then uid."""
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)


def processes_of_this_uid():
    """How many processes this uid has: without a user namespace of its own, RLIMIT_NPROC counts them all."""
    uid, count = os.getuid(), 0
    for entry in os.scandir("/proc"):
        try:
            count += entry.name.isdigit() and entry.stat().st_uid == uid
        except OSError:
            pass
    return count


def main(argv: list[str]) -> None:
    """Build the sandbox that argv describes and exec the program inside it (never returns)."""
    child = Child(argv)
    os.set_inheritable(child.fd, False)
    os.umask(0o022)
    if child.mode in ("none", "bwrap"):
        child.exec_plain()
    child.run_namespaced()


if __name__ == "__main__":
    main(sys.argv[1:])
