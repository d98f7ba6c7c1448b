"""What a stream shows: a state per stream (`ChatState`, `CompletionState`, and
`_responses_state.ResponsesState`) reads each chunk, and ends the call exactly once.

A state measures time to the first content chunk, keeps the last usage seen (never summed),
says which chunk to hide (the usage-only chunk otelstats itself asked for), and ends the call
on every exit path its proxy (`_stream_proxies`) reports: exhausted, closed, `with` exit, an
error, the proxy garbage-collected. Per chunk it does as little as it can: a few attribute
reads and one clock read on content chunks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from time import perf_counter
from typing import Any

from . import semconv
from ._instr_telemetry import Call
from ._long_strings import captured
from ._usage import timings_attributes, usage_attributes
from .records import Outcome

_TRANSPORT_ERRORS = frozenset({"APIConnectionError", "APITimeoutError", "TransportError"})
"""A stream cut short by the server or the network: the SDK's errors (today's SDK wraps what
breaks mid-stream in them) and httpx's own (which openai 1.x lets through from a stream)."""


class StreamState:
    """What a stream has shown so far; `feed` returns True for a chunk to hide from the user."""

    __slots__ = (
        "call",
        "content",
        "extra",
        "finished",
        "first",
        "hide_usage",
        "last",
        "model",
        "reasons",
        "response_id",
        "texts",
        "usage",
        "wire",
    )

    ends_with_done = False
    """The protocol ends a complete stream with `data: [DONE]` (chat, completions)."""

    def __init__(self, call: Call, *, hide_usage: bool = False) -> None:
        self.call = call
        self.hide_usage = hide_usage
        self.content = 0
        self.first: float | None = None
        self.last: float | None = None
        self.usage: Any = None
        self.model: str | None = None
        self.response_id: str | None = None
        self.reasons: dict[int, str] = {}
        self.finished = False
        """The server said the answer is complete (finish reason / terminal event)."""
        self.extra: dict[str, Any] = {}
        self.wire: _EndWatch | None = None
        """How the server ended the stream, where the SDK's stream lets it be watched."""
        telemetry = call.telemetry
        self.texts: dict[int, list[str]] | None = {} if telemetry.options.capture_content else None
        """Content capture (opt-in): the answer's text, per choice, as it streams."""
        telemetry.unfinished[id(self)] = self

    def feed(self, item: Any) -> bool:
        raise NotImplementedError

    def show(self, item: Any) -> bool:
        """Watch one chunk: False for the usage-only chunk otelstats asked for itself. A chunk
        that otelstats cannot read ends the call now and still goes to the user."""
        try:
            return not self.reader()(item)
        except Exception:  # from `feed`: `hides` never raises
            self.feed_failed()
            return not self.hides(item)

    def reader(self) -> Callable[[Any], bool]:
        """What reads the next chunks (True: hide it): `feed`, or `hides` once the call has
        ended (a new loop over a stream whose call ended at a chunk otelstats could not read)."""
        return self.hides if self.call.done else self.feed

    def hides(self, item: Any) -> bool:
        """Once the call has ended early (a chunk otelstats could not read): read nothing more,
        but still hide the usage-only chunk otelstats asked for. Never raises."""
        if not self.hide_usage:
            return False
        try:
            return item.usage is not None and self._asked_usage(item.choices)
        except Exception:
            return False

    def _asked_usage(self, choices: Any) -> bool:
        """Whether a chunk with usage is the usage chunk asked for: its choices empty, as OpenAI
        sends it, or (LiteLLM's proxy, MLX servers) choices that carry nothing, after the
        answer has finished."""
        return not choices or (self.finished and not any(map(_carries_output, choices)))

    def _content(self) -> None:
        now = perf_counter()
        if self.first is None:
            self.first = now
        self.last = now
        self.content += 1

    def end(
        self, outcome: Outcome, error: BaseException | None = None, ended: float | None = None
    ) -> None:
        """End the call (once); `ended`: when, if not now (`perf_counter`)."""
        call = self.call
        call.telemetry.unfinished.pop(id(self), None)
        if call.done:
            return
        attrs = self.extra
        if self.model:
            attrs[semconv.RESPONSE_MODEL] = self.model
        if self.response_id:
            attrs[semconv.RESPONSE_ID] = self.response_id
        reasons = self.reasons
        if len(reasons) == 1:  # one choice: no sort
            attrs[semconv.RESPONSE_FINISH_REASONS] = list(reasons.values())
        elif reasons:
            attrs[semconv.RESPONSE_FINISH_REASONS] = [reasons[i] for i in sorted(reasons)]
        if self.texts:
            answers = ["".join(self.texts[i]) for i in sorted(self.texts)]
            attrs[semconv.OUTPUT_MESSAGES] = captured(answers)
        reported = usage_attributes(self.usage)
        if reported:
            attrs.update(reported)
        elif self.content:
            # No usage from the server: count output chunks, flagged as counted (never as 0).
            attrs[semconv.USAGE_OUTPUT_TOKENS] = self.content
            attrs[semconv.OTELSTATS_TOKENS_SOURCE] = "counted"
        first_s = per_chunk_s = None
        if self.first is not None and self.last is not None:
            first_s = self.first - call.start
            if self.content > 1:
                per_chunk_s = max((self.last - self.first) / (self.content - 1), 0.0)
        # The chunk count and the last chunk's time are not span attributes: nothing reads them
        # from a span, and each attribute costs the caller about a microsecond.
        call.end(
            outcome, attrs, error=error, first_chunk_s=first_s, per_chunk_s=per_chunk_s, ended=ended
        )

    def exhausted(self) -> None:
        """The SDK's iteration ended: complete if the server said so (a finish reason, a
        terminal event, or `[DONE]`), else cut short."""
        wire = self.wire
        done = self.finished or (wire is not None and wire.done())
        if not done and wire is not None and wire.not_a_stream():
            self.extra[semconv.ERROR_TYPE] = semconv.NOT_AN_ANSWER
            self.end("error")
            return
        self.end("ok" if done else "incomplete")

    def watch(self, stream: Any) -> None:
        """Watch how `stream` (the SDK's, not iterated yet) ends, for `[DONE]` protocols."""
        if self.ends_with_done:
            self.wire = _EndWatch.install(stream)

    def feed_failed(self) -> None:
        """otelstats could not read a chunk: end the call now; the user's stream goes on."""
        self.call.telemetry.internal_error("reading a stream chunk")
        self.end("ok" if self.finished else "incomplete")

    def stopped(self) -> None:
        """Closed, left or dropped by the user: complete if the server had already finished."""
        self.end("ok" if self.finished else "cancelled")

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, GeneratorExit):
            return  # a loop over the stream was left, not the stream: a new loop goes on
        if not isinstance(exc, Exception):
            # What is not an error stops the stream from outside: Ctrl-C, asyncio's or trio's
            # cancellation (trio.Cancelled), a greenlet killed, `sys.exit` from another hook.
            self.end("ok" if self.finished else "cancelled")
        elif type(exc).__name__ in _TRANSPORT_ERRORS or any(
            c.__name__ in _TRANSPORT_ERRORS for c in type(exc).__mro__
        ):
            self.end("incomplete", exc)  # the server or the network cut the stream short
        else:
            self.end("error", exc)


class ChatState(StreamState):
    __slots__ = ()
    ends_with_done = True

    def feed(self, item: Any) -> bool:
        if not self.model:  # the first chunk that names it (Azure's first chunk has "")
            self.model = item.model
            self.response_id = item.id
        choices = item.choices
        usage = item.usage
        if choices:
            if usage is not None and self.hide_usage and self._asked_usage(choices):
                self.usage = usage  # the asked usage, sent with empty choices: hidden
                return True
            texts = self.texts
            for choice in choices:
                delta = choice.delta
                if delta is not None and (
                    delta.content or delta.tool_calls or _other_output(delta)
                ):
                    # `_content`, written out: the hottest line of a chat stream.
                    now = perf_counter()
                    if self.first is None:
                        self.first = now
                    self.last = now
                    self.content += 1
                    if texts is not None and delta.content:
                        texts.setdefault(choice.index, []).append(delta.content)
                reason = choice.finish_reason
                if reason:
                    self.reasons[choice.index] = reason
                    self.finished = True
                    self._timings(item)
                    if usage is None:
                        self._choice_usage(choice)
            if usage is not None:
                self.usage = usage  # the last one wins: continuous usage is cumulative
            elif self.hide_usage:
                _unset_usage(item)
            return False
        self._timings(item)
        if usage is not None:
            self.usage = usage
            return self.hide_usage
        if self.hide_usage:  # a chunk without choices, not the usage chunk (Azure's first)
            _unset_usage(item)
        return False

    def _choice_usage(self, choice: Any) -> None:
        """Moonshot's usage: in the finish choice of a stream, not in the chunk (read as the
        chunk's would be, unless the stream has one of those)."""
        extra = getattr(choice, "__pydantic_extra__", None)
        if extra and self.usage is None:
            found = extra.get("usage")
            if type(found) is dict and found:
                self.usage = found

    def _timings(self, item: Any) -> None:
        """llama.cpp's `timings`: on the finish chunk, or on the usage-only chunk when usage
        was asked for (read there only, not from every chunk)."""
        extra = item.__pydantic_extra__
        if extra and "timings" in extra:
            self.extra.update(timings_attributes(extra["timings"]))


def _unset_usage(item: Any) -> None:
    """otelstats asked for usage, the caller did not: a chunk's `usage: null`, which the server
    sends only when asked, stays unset, as the caller would have had it."""
    fields = item.__pydantic_fields_set__
    if "usage" in fields:
        fields.discard("usage")


def _carries_output(choice: Any) -> bool:
    """A chat chunk's choice brings output, or the end of the answer (a finish reason)."""
    if getattr(choice, "finish_reason", None):
        return True
    delta = getattr(choice, "delta", None)
    return delta is not None and bool(delta.content or delta.tool_calls or _other_output(delta))


def _other_output(delta: Any) -> bool:
    """Output a chat delta carries besides content and tool calls (read only when it has
    neither: a role-only or finish chunk, or reasoning before the answer): a refusal, the legacy
    `function_call`, `audio`, or reasoning text outside the SDK's fields."""
    # getattr: `refusal` came with openai 1.40 and `audio` with 1.5x; a field the SDK does not
    # know raises AttributeError, which would cost the stream its record.
    if (
        getattr(delta, "refusal", None)
        or getattr(delta, "function_call", None)
        or getattr(delta, "audio", None)
    ):
        return True
    extra: dict[str, Any] | None = getattr(delta, "__pydantic_extra__", None)
    if not extra:  # None, or the empty dict of a delta with no field outside the SDK's
        return False
    return any(extra.get(name) for name in semconv.DELTA_REASONING)


class CompletionState(StreamState):
    __slots__ = ()
    ends_with_done = True

    def feed(self, item: Any) -> bool:
        if not self.model:
            self.model = item.model
            self.response_id = item.id
        choices = item.choices
        usage = getattr(item, "usage", None)
        if choices:
            for choice in choices:
                if choice.text:
                    self._content()
                    if self.texts is not None:
                        self.texts.setdefault(choice.index, []).append(choice.text)
                if choice.finish_reason:
                    self.reasons[choice.index] = choice.finish_reason
                    self.finished = True
            if usage is not None:
                self.usage = usage
            return False
        if usage is not None:
            self.usage = usage
            return self.hide_usage
        return False


class _EndWatch:
    """The SDK's SSE decoder of one stream, put in its place to tell a stream the server ended
    with `[DONE]` from one cut short: the SDK reads `[DONE]` itself and hands nothing out for it.
    Today's SDKs stop reading at `[DONE]`, so a decoder they stopped pulling from ended there;
    older ones read on to the end of the body, and there the last event tells. Per event it
    costs one generator step. `_decoder` is the SDK's private attribute (openai 1.x to 3.x):
    a stream without one is not watched, and ends as before (by its finish reason)."""

    __slots__ = ("decoder", "dry", "eventless", "last_done", "read", "response")

    def __init__(self, decoder: Any, response: Any = None) -> None:
        self.decoder = decoder
        self.response = response
        """The SDK's HTTP response of the stream (its headers tell what the body was)."""
        self.eventless = False
        """The body ended without a single event."""
        self.read = False
        """The SDK read the stream through this decoder (an SDK that reads it otherwise leaves
        the stream to its finish reason)."""
        self.dry = False
        """The decoder ran out of events (the body ended), rather than the SDK stopping."""
        self.last_done = False

    @classmethod
    def install(cls, stream: Any) -> _EndWatch | None:
        decoder = getattr(stream, "_decoder", None)
        if decoder is None or not hasattr(decoder, "iter_bytes"):
            return None
        watch = cls(decoder, getattr(stream, "response", None))
        stream._decoder = watch
        return watch

    def done(self) -> bool:
        return self.last_done or (self.read and not self.dry)

    def not_a_stream(self) -> bool:
        """The body held no event and was not an event stream: a web page, or a JSON answer
        from a server that does not stream (the SDK then yields nothing), not a stream cut."""
        if not self.eventless:
            return False
        headers = getattr(self.response, "headers", None)
        kind = headers.get("content-type", "") if headers is not None else ""
        return isinstance(kind, str) and "event-stream" not in kind

    def _ended(self, event: Any) -> None:
        self.dry = True
        self.eventless = event is None
        data = getattr(event, "data", None)
        self.last_done = isinstance(data, str) and data.startswith("[DONE]")

    def iter_bytes(self, chunks: Any) -> Iterator[Any]:
        self.read = True
        event = None
        for event in self.decoder.iter_bytes(chunks):
            yield event
        self._ended(event)

    async def aiter_bytes(self, chunks: Any) -> AsyncIterator[Any]:
        self.read = True
        event = None
        async for event in self.decoder.aiter_bytes(chunks):
            yield event
        self._ended(event)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.decoder, name)
