"""A corpus directory behind a URI (s3a://, gs://, hdfs://, file://), with the few Path operations a build uses.

Object stores have no directories and no atomic rename: a file written here appears whole when its
stream closes (one PUT), which is the atomicity the build needs; `replace` of a directory copies
its objects and deletes the originals. The build's local paths stay `pathlib.Path`; helpers in
codekiln.data.build dispatch on the type.
"""

from __future__ import annotations

import fnmatch

from codekiln.data.readers import filesystem


class UriPath:
    """A file or directory inside a pyarrow filesystem, addressed like a pathlib.Path."""

    def __init__(self, uri: str, _fs=None, _path: str | None = None):
        base, sep, query = uri.partition("?")
        self._base, self._query = base.rstrip("/"), sep + query
        if _fs is None:
            _fs, _path = filesystem(uri)
        self.fs, self.path = _fs, _path.rstrip("/")

    def __truediv__(self, name: str) -> "UriPath":
        return UriPath(f"{self._base}/{name}{self._query}", self.fs, f"{self.path}/{name}")

    def __str__(self) -> str:
        return self._base + self._query

    def __repr__(self) -> str:
        return f"UriPath({str(self)!r})"

    @property
    def name(self) -> str:
        """The last component."""
        return self.path.rsplit("/", 1)[-1]

    def _type(self):
        return self.fs.get_file_info(self.path).type

    def exists(self) -> bool:
        """True when a file or directory is there."""
        import pyarrow.fs as pafs

        return self._type() != pafs.FileType.NotFound

    def is_file(self) -> bool:
        """True for a file."""
        import pyarrow.fs as pafs

        return self._type() == pafs.FileType.File

    def is_dir(self) -> bool:
        """True for a directory (or a prefix with objects under it)."""
        import pyarrow.fs as pafs

        return self._type() == pafs.FileType.Directory

    def iterdir(self):
        """The entries directly below this directory."""
        import pyarrow.fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return [self / info.base_name for info in sorted(infos, key=lambda i: i.path)]

    def glob(self, pattern: str):
        """Entries directly below whose names match a shell pattern."""
        return [p for p in self.iterdir() if fnmatch.fnmatch(p.name, pattern)]

    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        """Create the directory (a no-op on object stores)."""
        self.fs.create_dir(self.path, recursive=True)

    def read_bytes(self) -> bytes:
        """The file's bytes."""
        with self.fs.open_input_stream(self.path) as fh:
            return fh.read()

    def read_text(self) -> str:
        """The file's text (UTF-8)."""
        return self.read_bytes().decode("utf-8")

    def write_bytes(self, data: bytes) -> None:
        """Write the whole file; it appears complete or not at all."""
        with self.fs.open_output_stream(self.path) as fh:
            fh.write(data)

    def write_text(self, text: str) -> None:
        """Write the file as UTF-8."""
        self.write_bytes(text.encode("utf-8"))

    def unlink(self) -> None:
        """Delete the file."""
        self.fs.delete_file(self.path)

    def rmtree(self) -> None:
        """Delete the directory and everything below it, if it exists."""
        if self.is_dir():
            self.fs.delete_dir(self.path)

    def replace(self, target: "UriPath") -> None:
        """Move this file or directory to target (replacing a file there)."""
        self.fs.move(self.path, target.path)
