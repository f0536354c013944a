"""Files behind URIs (s3a://, s3://, gs://, hdfs://, file://), through pyarrow's filesystems.

`UriPath` offers the few pathlib.Path operations that readers and builds use, so a source or a
corpus directory can live in a store. Object stores have no directories and no atomic rename: a
file written here appears whole when its stream closes (one PUT), which is the atomicity the build
needs; `replace` of a directory copies its objects and deletes the originals. Local paths stay
`pathlib.Path`; callers dispatch on the type.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil

from codekiln.errors import UserError

URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# Hadoop's scheme names for the stores pyarrow reaches natively.
_SCHEME_ALIASES = {"s3a": "s3", "s3n": "s3", "gcs": "gs"}


def filesystem(uri: str):
    """(pyarrow FileSystem, path inside it) for a URI such as s3a://bucket/key, gs://..., hdfs://..., file://..."""
    import pyarrow.fs as pafs

    scheme = URI.match(uri).group(1)
    native = _SCHEME_ALIASES.get(scheme.lower(), scheme)
    try:
        return pafs.FileSystem.from_uri(native + uri[len(scheme):])
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad or unreachable store
        raise UserError(f"cannot open {uri}: {str(exc).splitlines()[0]}") from None



def is_uri(text: str) -> bool:
    """True for scheme://... strings."""
    return bool(URI.match(text))



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

    def read_bytes(self, limit: int | None = None) -> bytes:
        """The file's bytes (the first `limit` of them when given)."""
        with self.fs.open_input_stream(self.path) as fh:
            return fh.read() if limit is None else fh.read(limit)

    def size(self) -> int:
        """The file's size in bytes."""
        return self.fs.get_file_info(self.path).size

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
        """Move this file or directory to target (replacing a file there).

        Object stores cannot move a directory (pyarrow's S3 filesystem refuses): its files are
        copied, then the originals deleted.
        """
        if not self.is_dir():
            self.fs.move(self.path, target.path)
            return
        import pyarrow.fs as pafs

        target.fs.create_dir(target.path, recursive=True)  # local filesystems need it to exist
        pafs.copy_files(self.path, target.path, source_filesystem=self.fs, destination_filesystem=target.fs)
        self.fs.delete_dir(self.path)


def rmtree(path) -> None:
    """Delete a directory tree, local (a Path) or behind a URI (a UriPath), if it exists."""
    if isinstance(path, UriPath):
        path.rmtree()
    else:
        shutil.rmtree(path, ignore_errors=True)


def move(src, dst) -> None:
    """Rename a file or directory, local or behind a URI."""
    if isinstance(src, UriPath):
        src.replace(dst)
    else:
        os.replace(src, dst)
