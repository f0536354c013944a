"""The bridge between an HTTP request (asyncio) and the engine (its own thread).

A Job submits the engine requests behind one HTTP request (one per choice). The engine reports events on
its thread; they cross to the event loop with call_soon_threadsafe into an asyncio queue. While it waits,
a Job checks every few milliseconds whether its client is still connected, and cancels its engine
requests when it is not, so an editor that closes a request frees its batch slot within one decode step.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import AsyncIterator

from codekiln.errors import UserError
from codekiln.infer import Event, Overloaded, Request, Result, ShuttingDown
from codekiln.serve.errors import ApiError


class ClientGone(Exception):
    """The client disconnected before its completion was ready; nothing more is sent."""


class Job:
    """The engine requests of one HTTP request; see the module docstring."""

    def __init__(self, state, endpoint: str, requests: list[Request], *, stream: bool = False):
        self.state, self.endpoint, self.requests, self.stream = state, endpoint, requests, stream
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.handles = []
        self.results: list[Result | None] = [None] * len(requests)
        self.started = time.monotonic()
        self._closed = False
        self._count_cancel = False  # the client went away: count the cancellation when the engine confirms it
        self._counted = False

    def submit(self) -> "Job":
        """Queue every request on the engine; a 429 (queue full), 503 (shutting down) or 400 ApiError."""
        engine = self.state.engine
        try:
            for i, request in enumerate(self.requests):
                self.handles.append(engine.submit(request, functools.partial(self._on_event, i)))
        except Overloaded as exc:
            self.cancel(count=False)
            retry = str(self.state.settings.retry_after_s)
            raise ApiError(429, f"the server is busy ({exc}); retry in {retry} s",
                           headers={"Retry-After": retry}) from None
        except ShuttingDown:
            self.cancel(count=False)
            raise ApiError(503, "the server is shutting down", headers={"Retry-After": "5"}) from None
        except UserError as exc:
            self.cancel(count=False)
            raise ApiError(400, str(exc)) from None
        return self

    def _on_event(self, index: int, event: Event) -> None:
        """Called on the engine's thread: hand the event to the event loop (deltas only when streaming).

        A cancellation is counted here, once per HTTP request, when the engine reports a request it really
        dropped: a request that finished while its client was leaving is not a cancellation."""
        if (event.kind == "done" and event.result.finish_reason == "cancelled" and self._count_cancel
                and not self._counted):
            self._counted = True
            self.state.metrics.cancellations.labels(self.endpoint).inc()
        if event.kind != "done" and not self.stream:
            return
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (index, event))
        except RuntimeError:  # the event loop has closed (the server is gone); nobody is waiting
            pass

    async def events(self, http_request) -> AsyncIterator[tuple[int, Event]]:
        """(choice index, event) as the engine reports them, until every request is done; raises ClientGone
        (after cancelling) when the client disconnects, and an ApiError when the engine could not finish."""
        remaining = len(self.handles)
        poll = self.state.settings.disconnect_poll_s
        while remaining:
            try:
                index, event = await asyncio.wait_for(self.queue.get(), poll)
            except asyncio.TimeoutError:
                if await http_request.is_disconnected():
                    self.cancel()
                    raise ClientGone() from None
                continue
            if event.kind == "done":
                self.results[index] = event.result
                remaining -= 1
                _raise_for(event.result)
            yield index, event

    async def wait(self, http_request) -> list[Result]:
        """Every request's Result (see events)."""
        async for _ in self.events(http_request):
            pass
        return list(self.results)

    def cancel(self, count: bool = True) -> None:
        """Drop the engine requests that are still running; with `count`, the cancellation is counted when the
        engine confirms one (see _on_event)."""
        running = [h for i, h in enumerate(self.handles) if self.results[i] is None and not h.done]
        if running and count and not self._closed:
            self._count_cancel = True
        for h in running:
            h.cancel()

    def close(self) -> None:
        """The HTTP answer is over (or abandoned): cancel what still runs, record the metrics once."""
        if self._closed:
            return
        self.cancel()
        self._closed = True
        self.state.metrics.observe(self.endpoint, self.results)


def _raise_for(result: Result) -> None:
    """An ApiError for a request the engine ended without a completion."""
    if result.finish_reason == "shutdown":
        raise ApiError(503, "the server shut down before the completion finished", headers={"Retry-After": "5"})
    if result.finish_reason == "error":
        raise ApiError(500, "the completion failed inside the engine; the server logged the error")
