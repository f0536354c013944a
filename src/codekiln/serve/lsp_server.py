"""The language server of `codekiln lsp` (pygls 2): inline completion and completion from a backend.

    server = build_server(backend, debounce_ms=75)
    server.start_io()            # JSON-RPC over stdin/stdout until `exit`

`textDocument/inlineCompletion` (LSP 3.18) answers one item: the model's fill-in-the-middle text for the
cursor, cleaned for the editor (codekiln.infer.for_editor with the document's language; the cursor line
only when code follows the cursor on it). `textDocument/completion` answers the same text as one
CompletionItem, for clients without inline completion. Documents are kept in sync (full and incremental
changes). An automatic request waits `debounce_ms` first; a newer request in the same document
supersedes an older one, which answers an empty result at once, and `$/cancelRequest` cancels a request
(its engine request or HTTP call is stopped) with the RequestCancelled error. The custom request
`codekiln/status` reports the backend and its counters. Bad params, unknown
documents and positions past the end get LSP errors; nothing a client sends ends the server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import PurePath

import cattrs
from lsprotocol import types
from pygls.exceptions import FeatureRequestError, JsonRpcException, JsonRpcInvalidParams, JsonRpcParseError
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.uris import to_fs_path
from pygls.workspace.position_codec import ServerTextPosition

from codekiln import __version__
from codekiln.infer import editor_language, for_editor
from codekiln.serve.editor import single_line
from codekiln.serve.lsp_backend import BackendError, Completion, Query

log = logging.getLogger("codekiln.lsp")
STATUS = "codekiln/status"  # a custom request: the backend's state and counters (docs/lsp.md)
REQUEST_FAILED = types.LSPErrorCodes.RequestFailed.value
_WORD = re.compile(r"[A-Za-z0-9_$]*\Z")


@dataclass
class _BadRequest:
    """A request whose params did not parse: answered with an InvalidParams error by handle_message."""

    id: int | str
    method: str
    message: str


class _Protocol(LanguageServerProtocol):
    """pygls's protocol, but a request with malformed params gets an InvalidParams answer (pygls only logs
    it, so the client would wait forever)."""

    def structure_message(self, data):
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if not isinstance(data, dict) or "id" not in data or not isinstance(data.get("method"), str) \
                    or not isinstance(data["id"], (int, str)):
                raise
            cause = exc.__cause__
            detail = "; ".join(cattrs.transform_error(cause)) if isinstance(cause, cattrs.BaseValidationError) \
                else str(cause or exc)
            return _BadRequest(data["id"], data["method"], f"invalid params for {data['method']}: {detail}")

    def handle_message(self, message):
        if isinstance(message, _BadRequest):
            log.warning("%s", message.message)
            self._send_response(message.id, error=types.ResponseError(code=JsonRpcInvalidParams.CODE,
                                                                      message=message.message))
            return
        super().handle_message(message)


class _Ticket:
    """A completion request in flight for a document; a newer one sets `superseded`."""

    def __init__(self):
        self.superseded = asyncio.Event()


class CodekilnLanguageServer(LanguageServer):
    """The server: pygls's LanguageServer with a completion backend and the per-document request state."""

    def __init__(self, backend, *, debounce_ms: float = 75.0):
        super().__init__("codekiln", __version__, protocol_cls=_Protocol,
                         text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.backend = backend
        self.debounce_s = max(0.0, debounce_ms) / 1000
        self.tickets: dict[str, _Ticket] = {}
        self.touched: dict[str, float] = {}  # uri -> when it was last opened or changed
        self.shut_down = False

    def report_server_error(self, error: Exception, source) -> None:
        """A message that is not JSON gets JSON-RPC's parse error (id null); other out-of-band errors (a change
        to a document that is not open, a notification with bad params) are logged, never shown as pop-ups."""
        if source is FeatureRequestError:
            return  # the request's answer carries the error
        if isinstance(error, json.JSONDecodeError):  # JSON-RPC: a parse error answers with id null
            self.protocol._send_data({"jsonrpc": "2.0", "id": None, "error": {
                "code": JsonRpcParseError.CODE, "message": f"the message is not JSON: {error}"}})
            return
        log.warning("ignored a bad message: %s", getattr(error, "message", None) or error)

    # Requests.
    async def complete(self, doc_id: types.TextDocumentIdentifier, position: types.Position, *,
                       debounce: bool, selected: types.SelectedCompletionInfo | None = None):
        """(cleaned text, Query, cursor) for a request, or None when superseded; raises JsonRpcException."""
        doc = self.workspace.text_documents.get(_key(doc_id.uri))
        if doc is None:
            raise JsonRpcInvalidParams(f"document {doc_id.uri} is not open; send textDocument/didOpen first")
        text = doc.source
        cursor = _offset(doc, position)
        start = end = cursor
        if selected is not None:  # extend the item selected in the client's completion list
            start, end = _offset(doc, selected.range.start), max(cursor, _offset(doc, selected.range.end))
        prefix = text[:start] + (selected.text if selected is not None else "")
        query = Query(prefix, text[end:], lang=doc.language_id, **self._repository(doc))
        ticket = _Ticket()
        key = _key(doc_id.uri)
        older = self.tickets.get(key)
        if older is not None:
            older.superseded.set()
        self.tickets[key] = ticket
        try:
            if debounce and self.debounce_s:
                try:
                    await asyncio.wait_for(ticket.superseded.wait(), self.debounce_s)
                    return None
                except asyncio.TimeoutError:
                    pass
            try:
                completion = await self.backend.complete(query, ticket.superseded)
            except BackendError as exc:
                raise JsonRpcException(message=str(exc), code=REQUEST_FAILED) from None
            if completion is None:
                return None
            return clean(completion, query), query, cursor, start
        finally:
            if self.tickets.get(key) is ticket:
                del self.tickets[key]

    def _repository(self, doc) -> dict:
        """The document's path and repository (its workspace folder), and the other open documents of its
        language, least recently touched first (fit_repo_fim keeps the last ones when room is short)."""
        path, repo = _fs_path(doc.uri), ""
        for folder in self.workspace.folders.values():
            root = _fs_path(folder.uri)
            if root and path and PurePath(path).is_relative_to(root):
                path, repo = str(PurePath(path).relative_to(root)), folder.name or PurePath(root).name
                break
        else:
            path = PurePath(path).name if path else ""
        lang = _lang(doc.language_id)
        others = [d for d in self.workspace.text_documents.values()
                  if d.uri != doc.uri and lang is not None and _lang(d.language_id) == lang]
        others.sort(key=lambda d: self.touched.get(_key(d.uri), 0.0))
        extra = []
        for d in others:
            p = _fs_path(d.uri)
            for folder in self.workspace.folders.values():
                root = _fs_path(folder.uri)
                if root and p and PurePath(p).is_relative_to(root):
                    p = str(PurePath(p).relative_to(root))
                    break
            extra.append((p or d.uri, d.source))
        return {"path": path, "repo": repo, "extra": extra}


class _OneLine(logging.Filter):
    """pygls logs a traceback for every request answered with an error; for the errors this server raises on
    purpose (a client's bad params, a backend that failed) and for a message that is not JSON, one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (JsonRpcInvalidParams, json.JSONDecodeError)) or \
                (isinstance(exc, JsonRpcException) and exc.code == REQUEST_FAILED):
            record.msg, record.args = f"{record.getMessage()}: {exc}", ()
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        elif isinstance(record.msg, str) and record.msg.startswith("Unable to deserialize message"):
            return False  # pygls's traceback of a message with bad params; the answer (or warning) says it
        return True


def quiet_expected_errors() -> None:
    """Log the errors clients cause on one line each (see _OneLine)."""
    for name in ("pygls.protocol.json_rpc", "pygls.server"):
        logging.getLogger(name).addFilter(_OneLine())


def clean(completion: Completion, query: Query) -> str:
    """The text an editor shows (codekiln.infer.for_editor): the cursor line only when code follows the
    cursor on its line; a completion cut short ends at a usable point."""
    if not completion.text:
        return ""
    return for_editor(completion.text, query.prefix, query.suffix, single=single_line(query.suffix),
                      lang=query.lang, truncated=completion.truncated and not completion.cleaned)


def _key(uri: str) -> str:
    from urllib.parse import unquote

    return unquote(uri)


def _fs_path(uri: str) -> str:
    try:
        return to_fs_path(uri) or ""
    except Exception:  # a URI pygls cannot read as a path (another scheme): no path
        return ""


def _lang(language_id: str | None) -> str | None:
    if not language_id:
        return None
    return editor_language(language_id) or language_id.lower()


def _offset(doc, position: types.Position) -> int:
    """The index in doc.source of a client position; a line past the end is an InvalidParams error, a
    character past its line's end means the line's end (as the LSP specifies)."""
    lines = doc.lines
    text = doc.source
    if position.line > len(lines) or (position.line == len(lines) and text and not text.endswith(("\n", "\r"))):
        raise JsonRpcInvalidParams(f"position {position.line}:{position.character} is past the end of "
                                   f"{doc.uri} ({len(lines)} lines)")
    if position.line == len(lines):
        return len(text)
    line = lines[position.line]
    body = len(line.rstrip("\r\n"))
    col = doc.position_codec.position_from_client_units(lines, position).character
    return sum(len(ln) for ln in lines[:position.line]) + min(col, body)


def _position(doc, offset: int) -> types.Position:
    """The client position of an index in doc.source."""
    lines = doc.lines
    consumed = 0
    for n, line in enumerate(lines):
        if offset <= consumed + len(line.rstrip("\r\n")):
            return doc.position_codec.position_to_client_units(lines, ServerTextPosition(n, offset - consumed))
        consumed += len(line)
    return types.Position(line=len(lines), character=0)


def build_server(backend, *, debounce_ms: float = 75.0) -> CodekilnLanguageServer:
    """A language server answering inline completion and completion from `backend` (see the module
    docstring); start it with start_io()."""
    server = CodekilnLanguageServer(backend, debounce_ms=debounce_ms)

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(params: types.InlineCompletionParams):
        selected = params.context.selected_completion_info if params.context else None
        automatic = params.context is None or params.context.trigger_kind != types.InlineCompletionTriggerKind.Invoked
        done = await server.complete(params.text_document, params.position, debounce=automatic, selected=selected)
        if done is None or not done[0]:
            return types.InlineCompletionList(items=[])
        text, query, cursor, start = done
        doc = server.workspace.text_documents[_key(params.text_document.uri)]
        if selected is not None:
            return types.InlineCompletionList(items=[types.InlineCompletionItem(
                insert_text=selected.text + text, range=selected.range)])
        here = _position(doc, cursor)
        return types.InlineCompletionList(items=[types.InlineCompletionItem(
            insert_text=text, range=types.Range(start=here, end=here))])

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions())
    async def completion(params: types.CompletionParams):
        done = await server.complete(params.text_document, params.position, debounce=True)
        if done is None or not done[0]:
            return types.CompletionList(is_incomplete=True, items=[])
        text, query, cursor, _ = done
        doc = server.workspace.text_documents[_key(params.text_document.uri)]
        word = _WORD.search(query.prefix.rsplit("\n", 1)[-1]).group(0)  # clients filter items by it
        label = (word + text).strip().split("\n", 1)[0][:80] or text.strip()[:80]
        edit = types.TextEdit(range=types.Range(start=_position(doc, cursor - len(word)), end=_position(doc, cursor)),
                              new_text=word + text)
        return types.CompletionList(is_incomplete=True, items=[types.CompletionItem(
            label=label, kind=types.CompletionItemKind.Snippet, detail="codekiln", filter_text=word + text,
            sort_text="0", text_edit=edit, insert_text_format=types.InsertTextFormat.PlainText)])

    @server.feature(STATUS)
    def status(*_):
        return {**server.backend.stats(), "documents": len(server.workspace.text_documents),
                "in_flight": len(server.tickets)}

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(params: types.DidOpenTextDocumentParams):
        server.touched[_key(params.text_document.uri)] = time.monotonic()

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(params: types.DidChangeTextDocumentParams):
        server.touched[_key(params.text_document.uri)] = time.monotonic()

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(params: types.DidCloseTextDocumentParams):
        server.touched.pop(_key(params.text_document.uri), None)
        ticket = server.tickets.get(_key(params.text_document.uri))
        if ticket is not None:
            ticket.superseded.set()

    @server.feature(types.SHUTDOWN)
    def shutdown(*_):
        server.shut_down = True
        for ticket in server.tickets.values():
            ticket.superseded.set()

    return server
