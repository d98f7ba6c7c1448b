"""Conversation ids: explicit `conversation(id)`, an app-set id, the Responses API's chain, else a
salted fingerprint of the opening messages (so a chat client's turns group with no code change).

The fingerprint is a keyed BLAKE2b MAC of the messages up to the first user message, keyed by a
secret salt (per database or per install); message content itself is never stored.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import baggage
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Span

from . import semconv
from ._long_strings import replace_long

_CONVERSATION: ContextVar[str | None] = ContextVar("otelstats_conversation", default=None)
FINGERPRINT_PREFIX = "fp-"


@contextmanager
def conversation(conversation_id: str) -> Iterator[str]:
    """Calls made inside the block belong to `conversation_id` (works across threads' contexts
    that copy the current context, and inside asyncio tasks created in the block)."""
    if not isinstance(conversation_id, str) or not conversation_id:
        raise ValueError("conversation id must be a non-empty string")
    token = _CONVERSATION.set(conversation_id)
    try:
        yield conversation_id
    finally:
        _CONVERSATION.reset(token)


def current_conversation() -> str | None:
    return _CONVERSATION.get()


def app_conversation(current: Span, context: Context) -> str | None:
    """An id the application set itself: OTel baggage of `context`, or on its current span
    `current` (an SDK span)."""
    value = baggage.get_baggage(semconv.CONVERSATION_ID, context)
    if isinstance(value, str) and value:
        return value
    if current is INVALID_SPAN:  # no span is current (the common case): nothing to read
        return None
    attrs = getattr(current, "attributes", None)
    if isinstance(attrs, Mapping):
        value = attrs.get(semconv.CONVERSATION_ID)
        if isinstance(value, str) and value:
            return value
    return None


_KEYS = ("role", "content", "type", "name")
_LONG_TEXT = 64 * 1024
"""A string longer than this in the opening (an image sent as a data URL, a pasted document)
enters its text as a stand-in, the string's own SHA-256: dumping a 5 MB image to JSON and then
MACing it cost the caller 35 ms a call, more than the SDK spends sending it; its SHA-256 costs
3 ms, once per string object (`_STAND_INS`). Openings without such a string keep exactly the
text (and ids) they always had."""
_STAND_INS: dict[tuple[int, int, int], str] = {}
"""(id, length, hash()) of a long string -> its stand-in. A chat client resends the same string
object every turn; Python caches a string's hash() in the object, so a repeat costs a dict
lookup instead of a SHA-256. Nothing here keeps a string alive: an id reused by another
string of the same length would also need the same 64-bit hash."""


def _stand_in(text: str) -> str:
    key = (id(text), len(text), hash(text))
    found = _STAND_INS.get(key)
    if found is None:
        found = "\x1a" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()
        if len(_STAND_INS) >= 64:
            _STAND_INS.clear()
        _STAND_INS[key] = found
    return found


_INSTRUCTING = frozenset({"system", "developer"})
_CLOCK = re.compile(
    r"(?<!\d)\d{1,2}:\d\d(?::\d\d(?:[.,]\d+)?)?(?!\d)(?:\s?(?:[AaPp][Mm](?![A-Za-z])|[ap]\.m\.))?"
)
_CLOCK_STAND_IN = "\x1a:"


def _steady(text: str) -> str:
    """An instruction's text with its times of day (`15:04`, `03:04:20 PM`, `T15:04:20.123`) as one
    stand-in: chat clients and agents put the current time in the system prompt and rewrite it
    every turn (Open WebUI's `{{CURRENT_DATETIME}}`, many agents' "Current date and time"), which
    would make each turn a conversation of its own. Dates stay: a conversation over midnight is
    two. The common case, no digit before a colon, costs a few C-level scans."""
    at = text.find(":")
    while at >= 0:
        if at and text[at - 1].isdigit() and text[at + 1 : at + 3].isdigit():
            return _CLOCK.sub(_CLOCK_STAND_IN, text)
        at = text.find(":", at + 1)
    return text


def _plain(message: Any) -> Any:
    if type(message) is dict:  # the common case, without an ABC isinstance check
        return message
    if isinstance(message, Mapping):
        return {k: v for k, v in message.items() if k in _KEYS}
    dump = getattr(message, "model_dump", None)
    return _plain(dump()) if callable(dump) else str(message)


def opening_messages(messages: Any) -> list[Any] | None:
    """Messages up to and including the first user message; None when there is nothing stable.

    Only lists/tuples are read: a generator passed by the user must reach the SDK unconsumed.
    Mappings may carry more keys than those `_canonical` reads.
    """
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if not isinstance(messages, (list, tuple)) or not messages:
        return None
    opening = []
    for message in messages:
        plain = _plain(message)
        opening.append(plain)
        if isinstance(plain, Mapping) and plain.get("role") == "user":
            break
    return opening


def _canonical(opening: list[Any]) -> str:
    """A stable text of the opening messages' role/content/type/name. The common case (string
    fields) skips json.dumps, which costs several µs per call; anything else is dumped."""
    parts: list[str] = []
    for message in opening:
        if isinstance(message, Mapping):
            role = message.get("role")
            instructing = type(role) is str and role in _INSTRUCTING
            for key in _KEYS:
                value = message.get(key)
                if value is None:
                    continue
                if type(value) is not str:
                    short = replace_long(value, _LONG_TEXT, _stand_in)
                    value = json.dumps(short, sort_keys=True, default=str, ensure_ascii=False)
                elif len(value) > _LONG_TEXT:
                    value = _stand_in(value)
                if instructing and key == "content":
                    value = _steady(value)
                parts.append(f"{key}\x1f{value}")
        else:
            parts.append(f"\x1d{message}")
        parts.append("\x1e")
    return "".join(parts)


def _plain_canonical(messages: Any) -> str | None:
    """`_canonical(opening_messages(messages))` for the common shape, a list of plain dicts with
    string role/content (none of them long) and no type/name, in one pass; None for anything
    else (the general path then decides). The text must stay byte-identical: it keys stored
    conversation ids."""
    if type(messages) is not list:
        return None
    parts: list[str] = []
    for message in messages:
        if type(message) is not dict:
            return None
        role = message.get("role")
        content = message.get("content")
        if type(role) is not str or type(content) is not str or len(content) > _LONG_TEXT:
            return None
        if len(message) > 2 and (  # {role, content} alone has neither
            message.get("type") is not None or message.get("name") is not None
        ):
            return None
        if role in _INSTRUCTING:
            content = _steady(content)
        parts.append(f"role\x1f{role}content\x1f{content}\x1e")
        if role == "user":
            break
    return "".join(parts) if parts else None


def fingerprint(messages: Any, salt: bytes) -> str | None:
    """`fp-` + 32 hex digits of keyed BLAKE2b(salt, opening messages); None if unknown."""
    text = _plain_canonical(messages)
    if text is None:
        opening = opening_messages(messages)
        if opening is None:
            return None
        text = _canonical(opening)
    if len(text) > _MEMO_TEXT:
        return _digest(salt, text)
    return _memo_digest(salt, text)


_MEMO_TEXT = 4096
"""Openings up to this many characters are memoised (64 of them: at most ~1 MB held)."""


def _digest(salt: bytes, text: str) -> str:
    hasher = _keyed(salt).copy()
    hasher.update(text.encode("utf-8", "replace"))
    digest: str = hasher.hexdigest()
    return FINGERPRINT_PREFIX + digest


_memo_digest = functools.lru_cache(maxsize=64)(_digest)
"""Every turn of a conversation repeats its opening, so a chat client asks for the same
fingerprint again and again: a hit costs a dict lookup instead of a BLAKE2b run."""


@functools.lru_cache(maxsize=4)
def _keyed(salt: bytes) -> hashlib.blake2b:
    """Keyed BLAKE2b, a MAC (as HMAC-SHA256 would be) at half the cost; keys are <= 64 bytes.
    Keyed once per salt: a copy of the keyed state costs half of keying it anew per call."""
    return hashlib.blake2b(key=salt[:64], digest_size=16)


class ResponseChains:
    """Responses API: response id -> conversation id, so every turn of a `previous_response_id`
    chain keeps its first turn's id. The last `limit` responses are kept; thread-safe."""

    def __init__(self, limit: int = 10_000) -> None:
        self._ids: OrderedDict[str, str] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def get(self, response_id: str) -> str | None:
        return self._ids.get(response_id)

    def after_fork(self) -> None:
        """In a fork child: a new lock (another thread may have held the parent's at the fork,
        and no thread of the child would ever release it)."""
        self._lock = threading.Lock()

    def remember(self, response_id: str, conversation_id: str) -> None:
        with self._lock:
            self._ids[response_id] = conversation_id
            if len(self._ids) > self._limit:
                self._ids.popitem(last=False)


def from_request(body: Mapping[str, Any], salt: bytes, chains: ResponseChains | None) -> str | None:
    """The conversation id a request's own arguments (or JSON body) give: the Responses API's
    `conversation`, or its `previous_response_id` chain, else the fingerprint of the opening
    messages (a Responses call's `instructions` first)."""
    conv = body.get("conversation")
    if conv is not None:  # chat calls: no ABC checks on what is absent
        if isinstance(conv, str) and conv:
            return conv
        conv_id = conv.get("id") if isinstance(conv, Mapping) else None
        if isinstance(conv_id, str) and conv_id:
            return conv_id
    previous = body.get("previous_response_id")
    if isinstance(previous, str) and previous:
        first = chains.get(previous) if chains is not None else None
        return first if first is not None else previous
    messages = body.get("messages")
    if messages is None:
        messages = _with_instructions(body.get("input"), body.get("instructions"))
    return fingerprint(messages, salt)


def _with_instructions(items: Any, instructions: Any) -> Any:
    """The Responses API's opening: its `instructions` (the system message a chat call would
    send) before the `input`, so that two agents' conversations that open alike stay apart."""
    if type(instructions) is not str or not instructions:
        return items
    system = {"role": "system", "content": instructions}
    if isinstance(items, str):
        return [system, {"role": "user", "content": items}]
    if isinstance(items, (list, tuple)) and items:
        return [system, *items]
    return items


def resolve(
    kwargs: Mapping[str, Any],
    salt: bytes,
    chains: ResponseChains | None,
    current: Span,
    context: Context,
) -> str | None:
    """The conversation id of a call, by precedence: explicit, app-set (baggage, or the current
    span `current`, of `context`), then what the call's arguments give (`from_request`)."""
    explicit = _CONVERSATION.get()
    if explicit is not None:
        return explicit
    app = app_conversation(current, context)
    if app is not None:
        return app
    return from_request(kwargs, salt, chains)
