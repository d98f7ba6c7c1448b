"""Background responses this process started and has not yet seen end (see `_background`).

A background response (`responses.create(background=True)`) goes on at the server after the
create returns, or after its stream is cut or left: its call stays open here, under its response
id, until the app reads its end (a `retrieve` or `cancel` that returns it finished, or a resumed
stream's terminal event). One the app never follows up is given up after `MAX_AGE_S`, when many
more are waiting, at exit, or as soon as the server says it no longer has it (`gone`): it is
then recorded as it stood when it was parked, so nothing recorded before background responses
were followed is lost.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .records import Outcome

WAITING = frozenset({"queued", "in_progress"})
"""A Responses response's statuses before its end (then completed, incomplete, failed or
cancelled)."""
MAX_AGE_S = 3600.0
"""A parked call not followed up for this long is given up (deep research runs for minutes)."""
MAX_PARKED = 4096
"""At most this many parked calls per instrumentation; the oldest is given up first."""
MAX_CANCELS = 64
"""At most this many cancels kept for streams still being read (`cancelled`)."""


class Ends(Protocol):
    """What a parked call is kept as: the Responses stream state that ends it (`_streams`)."""

    def give_up(
        self, outcome: Outcome, error_type: str | None, message: str | None, ended: float
    ) -> None:
        """End the call for good, at `ended`, as `outcome` (with an error of that type and
        message, if it had one)."""

    def settle(self, response: Any, since: float) -> None:
        """End the call for good, as the finished `response` a follow-up returned says; `since`:
        when it was last seen going on (its end is no earlier, see `server_took`)."""


@dataclass(eq=False, slots=True)
class Parked:
    response_id: str
    state: Any
    """The call's `ResponsesState` (an `Ends`): what it has shown so far."""
    outcome: Outcome
    """How the call ends if it is given up: as it stood when it was parked."""
    error_type: str | None
    message: str | None
    """The error it stood with, by name: not the exception itself, whose traceback would keep
    the stream and its frames alive while the response goes on."""
    since: float
    """When it was parked (`perf_counter`): its end if it is given up."""


class ParkedResponses:
    """Parked calls by response id, oldest first. Thread-safe."""

    def __init__(self) -> None:
        self._by_id: dict[str, Parked] = {}
        self._cancels: dict[str, Any] = {}
        """Responses cancelled while not parked (their streams being read), by id, oldest
        first: what the cancel returned."""
        self._lock = threading.Lock()
        self.closed = False
        """Set at exit: nothing is parked any more, calls end as they are."""

    def __bool__(self) -> bool:
        return bool(self._by_id)

    def __contains__(self, response_id: object) -> bool:
        return response_id in self._by_id

    def park(
        self,
        response_id: str,
        state: Ends,
        outcome: Outcome,
        error_type: str | None = None,
        message: str | None = None,
    ) -> bool:
        """Keep `state`'s call open under `response_id`, standing as `outcome` (with an error of
        that type and message); False (nothing kept) once closed. A response cancelled while
        its stream was being read (`cancelled`) is not kept: its call ends, cancelled."""
        now = perf_counter()
        with self._lock:
            cancelled = self._cancels.pop(response_id, None)
        if cancelled is not None:  # cancelled while its stream was being read: that is its end
            state.settle(cancelled, now)
            return True
        if self.closed:
            return False
        parked = Parked(response_id, state, outcome, error_type, message, now)
        with self._lock:
            replaced = self._by_id.get(response_id)
            if replaced is not None and replaced.state is state:
                return True  # parked already (its stream, cut, then collected or closed)
            replaced = self._by_id.pop(response_id, None)
            self._by_id[response_id] = parked
        if replaced is not None:
            self.give_up(replaced)
        self.sweep()
        return True

    def take(self, response_id: str) -> Parked | None:
        """The call parked under `response_id`, no longer parked (None: not parked, or another
        thread took it first)."""
        with self._lock:
            parked = self._by_id.pop(response_id, None)
        self.sweep()
        return parked

    def cancelled(self, response_id: str, response: Any) -> None:
        """A cancel returned `response` finished while nothing was parked under its id: its
        stream may be being read right now (a chat app's stop button). If that stream then
        ends without the response's end and would be parked, it ends as `response` says."""
        with self._lock:
            self._cancels[response_id] = response
            while len(self._cancels) > MAX_CANCELS:
                del self._cancels[next(iter(self._cancels))]

    def gone(self, response_id: str) -> None:
        """The server no longer has `response_id` (a follow-up answered 404, or the app deleted
        it): its end will never be seen, so its parked call, if any, is given up now."""
        parked = self.take(response_id)
        if parked is not None:
            self.give_up(parked)

    def give_up(self, parked: Parked) -> None:
        """End a parked call as it stood when it was parked."""
        with self._lock:
            if self._by_id.get(parked.response_id) is parked:
                del self._by_id[parked.response_id]
        parked.state.give_up(parked.outcome, parked.error_type, parked.message, parked.since)

    def sweep(self) -> None:
        """Give up what has waited longer than `MAX_AGE_S`, and the oldest beyond `MAX_PARKED`."""
        oldest = perf_counter() - MAX_AGE_S
        stale: list[Parked] = []
        with self._lock:
            excess = len(self._by_id) - MAX_PARKED
            for parked in self._by_id.values():  # oldest first
                if parked.since >= oldest and len(stale) >= excess:
                    break
                stale.append(parked)
        for parked in stale:
            self.give_up(parked)

    def close(self) -> None:
        """At exit: give up every parked call, and park none from now on."""
        self.closed = True
        with self._lock:
            every = list(self._by_id.values())
        for parked in every:
            self.give_up(parked)

    def after_fork(self) -> None:
        """In a fork child: the parked calls are the parent's, which records them."""
        self._lock = threading.Lock()
        self._by_id.clear()
        self._cancels.clear()


def server_took(created_at: Any, completed_at: Any) -> float | None:
    """How long a finished background response took by the server's own clock
    (`completed_at - created_at`, whole seconds), if it says. Its call ends that long after its
    create, but no earlier than it was parked and no later than the follow-up that showed its
    end: a poll every few seconds must not stretch its duration (and lower its tokens per
    second)."""
    if not isinstance(created_at, (int, float)) or not isinstance(completed_at, (int, float)):
        return None
    took = float(completed_at - created_at)
    return took if took >= 0 else None
