"""Stream proxies: forward everything to the SDK stream, show each chunk to the stream's state
(`_streams`), and tell it how the stream ended.

A `for` loop over a proxy runs a generator around the SDK's own (as `iter()` of an SDK stream is
a generator); `next()` on the proxy itself goes through `__next__`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Any

import wrapt

from ._streams import StreamState


def _watched(proxy: Any, chunks: Iterator[Any], state: StreamState) -> Iterator[Any]:
    """The SDK's iteration, watched. Dropping this iterator does not end the call (the SDK's
    stream stays open and a new loop goes on where this one stopped): close, `with` exit or
    the proxy's garbage collection do, so the proxy is kept alive while this iterator is."""
    feed = state.reader()
    try:
        for item in chunks:
            # `show`, written out: one Python call less per chunk on the common path. The
            # call ends early only when a chunk cannot be read (then `feed` is swapped for
            # `hides`) or when the stream is closed, after which no chunk arrives.
            try:
                hide = feed(item)
            except Exception:
                state.feed_failed()  # the call ends; the rest of the stream is not read
                feed = state.hides
                hide = feed(item)
            if not hide:
                yield item
    except BaseException as exc:
        state.failed(exc)
        raise
    state.exhausted()


async def _awatched(
    proxy: Any, chunks: AsyncIterator[Any], state: StreamState
) -> AsyncIterator[Any]:
    """`_watched` for the async SDK stream."""
    feed = state.reader()
    try:
        async for item in chunks:
            try:
                hide = feed(item)
            except Exception:
                state.feed_failed()  # the call ends; the rest of the stream is not read
                feed = state.hides
                hide = feed(item)
            if not hide:
                yield item
    except BaseException as exc:
        state.failed(exc)
        raise
    state.exhausted()


class _ClosingResponse(wrapt.ObjectProxy[Any]):
    """The stream's HTTP response: SDK helpers close it directly, so its close ends the call."""

    def __init__(self, wrapped: Any, state: StreamState) -> None:
        super().__init__(wrapped)
        self._self_state = state

    def __repr__(self) -> str:
        return repr(self.__wrapped__)

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_state.stopped()

    async def aclose(self) -> None:
        try:
            await self.__wrapped__.aclose()
        finally:
            self._self_state.stopped()


class _StreamProxyBase(wrapt.ObjectProxy[Any]):
    _self_response: Any = None
    """The `response` handed out, made on first access (a class default: one store less per
    stream, each costs a few hundred nanoseconds on a wrapt proxy)."""

    def __init__(self, wrapped: Any, state: StreamState) -> None:
        wrapt.ObjectProxy.__init__(self, wrapped)  # a direct call: `super()` costs more here
        self._self_state = state
        state.watch(wrapped)

    def __repr__(self) -> str:
        # wrapt's own names the proxy; the user printing a stream sees the SDK's object.
        return repr(self.__wrapped__)

    @property
    def response(self) -> Any:
        if self._self_response is None:
            self._self_response = _ClosingResponse(self.__wrapped__.response, self._self_state)
        return self._self_response

    def __del__(self) -> None:
        state = self._self_state
        if not state.call.done:
            state.stopped()


class SyncStreamProxy(_StreamProxyBase):
    """Wraps `openai.Stream`."""

    def __iter__(self) -> Iterator[Any]:
        # A generator, as the SDK's own `Stream.__iter__` is: each chunk then costs a generator
        # resume, not two Python calls (this proxy's `__next__` and the SDK's).
        return _watched(self, self.__wrapped__.__iter__(), self._self_state)

    def __next__(self) -> Any:
        wrapped = self.__wrapped__
        state = self._self_state
        while True:
            try:
                item = wrapped.__next__()
            except StopIteration:
                state.exhausted()
                raise
            except BaseException as exc:
                state.failed(exc)
                raise
            if state.show(item):
                return item

    def __enter__(self) -> SyncStreamProxy:
        self.__wrapped__.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        try:
            return self.__wrapped__.__exit__(exc_type, exc, tb)
        finally:
            self._self_state.stopped()

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_state.stopped()


class AsyncStreamProxy(_StreamProxyBase):
    """Wraps `openai.AsyncStream`."""

    def __aiter__(self) -> AsyncIterator[Any]:
        return _awatched(self, self.__wrapped__.__aiter__(), self._self_state)

    async def __anext__(self) -> Any:
        wrapped = self.__wrapped__
        state = self._self_state
        while True:
            try:
                item = await wrapped.__anext__()
            except StopAsyncIteration:
                state.exhausted()
                raise
            except BaseException as exc:
                state.failed(exc)
                raise
            if state.show(item):
                return item

    async def __aenter__(self) -> AsyncStreamProxy:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        try:
            return await self.__wrapped__.__aexit__(exc_type, exc, tb)
        finally:
            self._self_state.stopped()

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            self._self_state.stopped()
