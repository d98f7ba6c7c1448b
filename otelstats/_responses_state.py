"""The Responses API's stream state: its events read as `StreamState` reads chat chunks, a
finished response's outcome (`response_outcome`), and a background response's stream parked
while the response goes on at the server (`_parked`, `_background`).
"""

from __future__ import annotations

from collections.abc import Mapping
from time import perf_counter
from typing import Any

from . import semconv
from ._instr_telemetry import Call
from ._parked import server_took
from ._streams import StreamState
from .records import Outcome


class StoodWith(Exception):
    """The message of the error a parked call stood with (its type is recorded by name)."""


_PARKS: frozenset[Outcome] = frozenset({"incomplete", "cancelled"})
"""How a background response's stream may end while the response goes on at the server."""


class ResponsesState(StreamState):
    __slots__ = ("background",)

    def __init__(self, call: Call, *, hide_usage: bool = False) -> None:
        super().__init__(call, hide_usage=hide_usage)
        self.background = False
        """A background response (`background=True`): it goes on at the server whatever
        becomes of this stream, and may be followed up later (`_background`)."""

    def feed(self, item: Any) -> bool:
        kind = item.type
        if kind.endswith(".delta"):  # any generated output: text, reasoning, tool input, audio
            self._content()
            if self.texts is not None and kind == "response.output_text.delta":
                index = getattr(item, "output_index", 0)
                self.texts.setdefault(index, []).append(item.delta)
        elif kind in semconv.RESPONSE_TERMINAL_EVENTS or kind == "response.created":
            response = item.response
            self.model = response.model or self.model
            self.response_id = response.id or self.response_id
            if kind == "response.created":
                self.background = getattr(response, "background", None) is True
            else:
                self.usage = response.usage
                self.finished = True
                self.extra.update(response_outcome(response))
        elif kind == "error":
            self.finished = True
            self.extra[semconv.ERROR_TYPE] = str(getattr(item, "code", None) or "error")
        return False

    def exhausted(self) -> None:
        if semconv.ERROR_TYPE in self.extra:
            self.end("error")
        else:
            super().exhausted()

    def end(
        self, outcome: Outcome, error: BaseException | None = None, ended: float | None = None
    ) -> None:
        """A background response's stream cut or left before its end is parked: the response
        goes on, and the app may resume its stream or poll for it (`_parked`), unless the app
        cancelled it meanwhile. A call given its end time ends for good."""
        if (
            ended is None
            and self.background
            and outcome in _PARKS
            and self.response_id
            and not self.call.done
            and self.call.telemetry.parked.park(
                self.response_id,
                self,
                outcome,
                None if error is None else type(error).__qualname__,
                None if error is None else str(error)[:200],
            )
        ):
            self.call.telemetry.unfinished.pop(id(self), None)  # open now as a parked call
            return
        super().end(outcome, error, ended)

    def replayed(self) -> None:
        """Its stream is resumed from the start (no `starting_after`): the server sends every
        event again, so the output is counted anew (the first chunk's time stays)."""
        self.content = 0
        if self.texts is not None:
            self.texts = {}

    def settle(self, response: Any, since: float) -> None:
        """End the call as the finished `response` a follow-up returned says (a poll, a
        cancel): its usage, its outcome, its status as the finish reason; `since`: when it was
        last seen going on (`perf_counter`). It ended when the server says (`server_took`)."""
        ended = perf_counter()
        took = server_took(
            getattr(response, "created_at", None), getattr(response, "completed_at", None)
        )
        if took is not None:
            ended = min(ended, max(since, self.call.start + took))
        self.model = response.model or self.model
        if response.usage is not None:
            self.usage = response.usage
        self.finished = True
        self.extra.pop(semconv.RESPONSE_FINISH_REASONS, None)  # the status it was parked with
        self.extra.update(response_outcome(response))
        if self.texts is not None:  # content capture: the whole answer, as the response has it
            text = getattr(response, "output_text", None)
            if text:
                self.texts = {0: [text]}
        outcome: Outcome = "ok"
        if response.status == "cancelled":
            outcome = "cancelled"
        elif semconv.ERROR_TYPE in self.extra:
            outcome = "error"
        self.end(outcome, ended=ended)

    def give_up(
        self, outcome: Outcome, error_type: str | None, message: str | None, ended: float
    ) -> None:
        """A parked call no one followed up: end it as it stood when it was parked (`_parked`).
        An end time: the call ends for good."""
        if error_type is not None:
            self.extra.setdefault(semconv.ERROR_TYPE, error_type)
        self.end(outcome, None if message is None else StoodWith(message), ended)

    def delta(self) -> None:
        """One output event, seen but not parsed (`_websocket`, an app's own `recv_bytes`)."""
        self._content()


def response_outcome(response: Any) -> dict[str, Any]:
    """Finish reason / error of a Responses API `Response` (failed => error.type)."""
    status = getattr(response, "status", None)
    if status == "failed":
        error = getattr(response, "error", None)
        return {semconv.ERROR_TYPE: str(getattr(error, "code", None) or "response.failed")}
    if status == "incomplete":
        details = getattr(response, "incomplete_details", None)
        reason = getattr(details, "reason", None) or "incomplete"
        return {semconv.RESPONSE_FINISH_REASONS: [str(reason)]}
    if isinstance(status, str):
        return {semconv.RESPONSE_FINISH_REASONS: [status]}
    error = getattr(response, "error", None)  # no status: an error answered with 200 (OpenRouter)
    if error is None:
        return {}
    if not isinstance(error, Mapping):  # the SDK's model of it
        error = {"code": getattr(error, "code", None), "type": getattr(error, "type", None)}
    return {semconv.ERROR_TYPE: semconv.answered_error(error) or "error"}
