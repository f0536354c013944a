"""A terminal editor (Vim, Neovim) run in a pseudo-terminal and driven by keystrokes, as a user types."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import termios
import time
from typing import Callable


class Terminal:
    """A command in a pseudo-terminal of `rows` x `cols`; `send` types keys, `pump` keeps reading its screen output.

    The output is drained all the time the test waits (`pump`, `wait_for`), so the editor never blocks on a
    full terminal buffer. `close` ends the process if it is still running.
    """

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str, rows: int = 30, cols: int = 100) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: become the editor
            try:
                os.chdir(cwd)
                os.execvpe(argv[0], argv, env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.output = bytearray()
        self.status: int | None = None

    def pump(self, seconds: float) -> None:
        """Read the editor's output for this long."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and self.fd >= 0:
            ready, _, _ = select.select([self.fd], [], [], min(0.05, max(0.0, end - time.monotonic())))
            if ready:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:  # the editor closed its terminal
                    data = b""
                if not data:
                    self._reap(block=True)
                    return
                self.output.extend(data)

    def send(self, keys: bytes | str, settle: float = 0.2) -> None:
        """Type these keys, then read the output for `settle` seconds."""
        os.write(self.fd, keys.encode() if isinstance(keys, str) else keys)
        self.pump(settle)

    def wait_for(self, done: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
        """Read the output until `done()` holds (True) or the timeout passes (False)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if done():
                return True
            self.pump(step)
        return done()

    def wait_exit(self, timeout: float) -> int | None:
        """The exit status once the editor has quit within the timeout, else None."""
        self.wait_for(lambda: self._reap(block=False) is not None, timeout)
        return self.status

    def _reap(self, block: bool) -> int | None:
        if self.status is None:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
        return self.status

    def close(self) -> None:
        """Kill the editor if it still runs and release the terminal."""
        if self._reap(block=False) is None:
            os.kill(self.pid, signal.SIGKILL)
            self._reap(block=True)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def text(self) -> str:
        """Everything the editor wrote to the terminal, decoded."""
        return self.output.decode(errors="replace")
