"""Reading sources that may fail: transient I/O errors are retried, damage is recorded, the rest stops a task.

Every byte a reader takes from a source goes through `RetryingFile`, so the two kinds of failure
are told apart by where they come from, not by their message:

* an error of the storage itself (an `OSError` from opening or reading, other than the permanent
  ones below) is transient: the read is tried again at the same position, after `RetryPolicy.delays`.
  If it persists, `SourceUnavailable` stops the task, which stays unfinished: the build ends
  with one line and a rerun retries it.
* an error raised while decoding bytes that were read (a Parquet footer or page that does not
  decode, a gzip stream that ends early) is damage to the data: it will not go away, so the reader
  records what was lost as an `unreadable` document and the build goes on.
* a missing file, a directory, a denied permission are permanent and left to the reader (the file is
  `unreadable`); `MemoryError` and `KeyboardInterrupt` are never caught.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from codekiln.errors import UserError

# Errors retrying cannot fix: the file is not there, is not a file, or is not ours to read.
PERMANENT = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
# How SourceUnavailable's message starts, so a driver can find it in a remote worker's traceback (Spark).
MARKER = "source unavailable:"


class SourceUnavailable(UserError):
    """A source still failed with a transient I/O error after every retry: its task stays unfinished."""


@dataclass(frozen=True)
class RetryPolicy:
    """Delays in seconds between tries of one read (len(delays) + 1 tries); `sleep` waits them."""

    delays: tuple[float, ...] = (0.5, 2.0, 8.0)
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)


# The policy readers use when none is given; tests replace it with one that does not wait.
RETRY = RetryPolicy()


def is_transient(exc: BaseException) -> bool:
    """Whether an error of opening or reading a file may go away when tried again."""
    return isinstance(exc, OSError) and not isinstance(exc, PERMANENT)


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message, one line, at most `limit` characters (for reports)."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line[:limit]


def with_retries(fn: Callable, what: str, policy: RetryPolicy | None = None):
    """fn() tried again after each delay while it raises a transient error; then SourceUnavailable."""
    policy = policy or RETRY
    for delay in (*policy.delays, None):
        try:
            return fn()
        except OSError as exc:
            if not is_transient(exc):
                raise
            if delay is None:
                raise SourceUnavailable(f"{MARKER} {what}: {first_line(exc)} "
                                        f"(tried {len(policy.delays) + 1} times)") from None
            policy.sleep(delay)
    raise AssertionError("unreachable")


class RetryingFile(io.RawIOBase):
    """A read-only, seekable file whose opens and reads retry transient errors, reopening at the same position.

    `opener(location)` returns an unbuffered binary file object (a local file or a pyarrow stream).
    Opening happens in the constructor, so a permanent error (missing file) surfaces there.
    """

    def __init__(self, location: str, opener: Callable[[str], object], policy: RetryPolicy | None = None):
        super().__init__()
        self.location, self._opener, self._policy = location, opener, policy or RETRY
        self._fh = None
        self._pos = 0
        self._size: int | None = None
        with_retries(self._ensure_open, location, self._policy)

    def _ensure_open(self):
        if self._fh is None:
            self._fh = self._opener(self.location)
        return self._fh

    def _drop(self) -> None:
        """Forget the underlying file after a failure, so the next try opens it afresh."""
        fh, self._fh = self._fh, None
        if fh is not None:
            try:
                fh.close()
            except Exception:  # noqa: BLE001 - closing a broken stream may fail too; it is discarded either way
                pass

    def _try(self, op: Callable):
        def attempt():
            try:
                return op(self._ensure_open())
            except OSError as exc:
                if is_transient(exc):
                    self._drop()
                raise
        return with_retries(attempt, self.location, self._policy)

    def readable(self) -> bool:
        """Always: this is a reader."""
        return True

    def seekable(self) -> bool:
        """Always: positions are kept here and restored on every try."""
        return True

    def tell(self) -> int:
        """The current position."""
        return self._pos

    def size(self) -> int:
        """The file's size in bytes."""
        if self._size is None:
            self._size = self._try(lambda fh: fh.seek(0, io.SEEK_END))
        return self._size

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move the position (the underlying file follows on the next read)."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos}.get(whence)
        self._pos = max(0, offset + (self.size() if base is None else base))
        return self._pos

    def read(self, n: int = -1) -> bytes:
        """Up to n bytes (all that is left when n < 0), fewer only at the end of the file."""
        if n is None or n < 0:
            return self.readall()
        chunks, want = [], n
        while want > 0:
            def op(fh, want=want):
                fh.seek(self._pos)
                return fh.read(want)
            data = self._try(op)
            if not data:
                break
            chunks.append(data)
            self._pos += len(data)
            want -= len(data)
        return b"".join(chunks)

    def readall(self) -> bytes:
        """Everything from the position to the end."""
        def op(fh):
            fh.seek(self._pos)
            return fh.read()
        data = self._try(op)
        self._pos += len(data)
        return data

    def readinto(self, buffer) -> int:
        """Fill a buffer (io's protocol)."""
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        """Close the underlying file."""
        self._drop()
        super().close()
