"""The Document contract (ARCHITECTURE.md) and the raw records readers hand to the stages."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pyarrow as pa

DOCUMENT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("content", pa.string()),
        ("path", pa.string()),
        ("repo", pa.string()),
        ("lang", pa.string()),
        ("license", pa.string()),
        ("source", pa.string()),
        ("bytes", pa.int64()),
        ("stars", pa.int64()),
        ("cluster_id", pa.string()),
    ]
)
REMOVED_SCHEMA = DOCUMENT_SCHEMA.append(pa.field("reason", pa.string()))


@dataclass(slots=True)
class RawDoc:
    """One file as a reader found it, before any stage ran.

    `data` holds the file's bytes (or the UTF-8 encoding of text given by a dataset); `error` is
    a drop reason set by the reader itself (`unreadable`), in which case `data` may be empty.
    `truncated` marks a file the reader did not read in full because it exceeds the size cap.
    A record for a damaged part of a source (a Parquet row group that does not decode) stands for
    `rows` documents of `size` bytes in all, and `damage` says what was lost: `{what, error, rows,
    bytes}`, rows and bytes None where the source does not say.
    """

    source: str
    repo: str
    path: str
    data: bytes
    license: str | None = None
    stars: int | None = None
    lang_hint: str | None = None
    size: int = -1
    truncated: bool = False
    error: str | None = None
    rows: int = 1
    damage: dict | None = None

    def __post_init__(self) -> None:
        if self.size < 0:
            self.size = len(self.data)
        self.repo, self.path = clean_name(self.repo), clean_name(self.path)


def clean_name(name: str) -> str:
    """A name as valid UTF-8 text: undecodable file-name bytes and lone surrogates become escapes."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        try:
            raw = name.encode("utf-8", "surrogateescape")  # file names the OS could not decode
        except UnicodeEncodeError:
            raw = name.encode("utf-8", "surrogatepass")  # lone surrogates from a dataset
        return raw.decode("utf-8", "backslashreplace")


def document_id(repo: str, path: str, data: bytes) -> str:
    """Stable id of a document: a 128-bit hash of its repository, path and original bytes."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repo.encode("utf-8", "surrogatepass"))
    h.update(b"\0")
    h.update(path.encode("utf-8", "surrogatepass"))
    h.update(b"\0")
    h.update(data)
    return h.hexdigest()


def text_to_bytes(text: str) -> bytes:
    """UTF-8 bytes of dataset text; lone surrogates survive so the hygiene stage can reject them."""
    return text.encode("utf-8", "surrogatepass")
