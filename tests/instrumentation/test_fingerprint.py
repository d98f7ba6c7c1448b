"""The conversation fingerprint's one-pass fast path must give exactly the text of the general
path: that text keys every stored conversation id, so a difference would split conversations."""

from __future__ import annotations

import hashlib
import importlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

conversation = importlib.import_module("otelstats.conversation")  # the package exports a function

TEXT = st.text(alphabet=st.sampled_from(["a", "é", "\x00", "\ud800", "\x1f", " ", "1", ":"]))
VALUE = st.one_of(
    st.none(),
    TEXT,
    st.sampled_from(["user", "system", "developer", "assistant", "It is 09:15:02 PM."]),
    st.integers(),
)
MESSAGE = st.one_of(
    st.fixed_dictionaries({"role": VALUE, "content": VALUE}),
    st.fixed_dictionaries(
        {"role": VALUE, "content": VALUE}, optional={"type": VALUE, "name": VALUE}
    ),
    st.dictionaries(st.sampled_from(["role", "content", "type", "name", "extra"]), VALUE),
)


@settings(max_examples=300, deadline=None)
@given(messages=st.lists(MESSAGE, max_size=5))
def test_fast_path_matches_the_general_text(messages: list[dict[str, Any]]) -> None:
    fast = conversation._plain_canonical(messages)
    opening = conversation.opening_messages(messages)
    general = conversation._canonical(opening) if opening is not None else None
    if fast is not None:
        assert fast == general
    salt = b"k" * 32
    expected = None
    if general is not None:
        digest = hashlib.blake2b(general.encode("utf-8", "replace"), key=salt, digest_size=16)
        expected = conversation.FINGERPRINT_PREFIX + digest.hexdigest()
    assert conversation.fingerprint(messages, salt) == expected


def test_fast_path_is_taken_for_plain_chat_messages() -> None:
    messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}]
    assert conversation._plain_canonical(messages) is not None
    assert conversation._plain_canonical(tuple(messages)) is None  # general path instead


@pytest.mark.parametrize("length", [10, conversation._MEMO_TEXT + 1])
def test_repeated_openings_keep_their_fingerprint_under_each_salt(length: int) -> None:
    """Short openings are memoised: a repeat must give what a fresh BLAKE2b gives, per salt."""
    messages = [{"role": "user", "content": "x" * length}]
    text = conversation._plain_canonical(messages)
    assert text is not None
    seen = {}
    for salt in (b"first salt", b"second salt", b"first salt"):
        digest = hashlib.blake2b(text.encode(), key=salt, digest_size=16).hexdigest()
        assert conversation.fingerprint(messages, salt) == conversation.FINGERPRINT_PREFIX + digest
        assert conversation.fingerprint(list(messages), salt) == seen.setdefault(
            salt, conversation.fingerprint(messages, salt)
        )
    assert len(set(seen.values())) == 2


def _image(seed: int, size: int) -> str:
    """A data URL of `size` base64 characters, as a chat client sends a picture."""
    return "data:image/png;base64," + "".join(
        chr(65 + (i * 7919 + seed * 104729) % 26) for i in range(size)
    )


def _with_image(url: str, text: str = "What is in this picture?") -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "You describe pictures."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": text},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        },
    ]


@pytest.mark.parametrize("shape", ["content parts", "plain text"])
def test_long_strings_tell_openings_apart_by_every_character(shape: str) -> None:
    """A picture or a pasted document enters the fingerprint by its digest: the same bytes give
    the same id whatever object carries them, one character changed anywhere gives another."""
    salt = b"k" * 32
    long = _image(1, conversation._LONG_TEXT * 3)
    middle = len(long) // 2
    changed = long[:middle] + ("B" if long[middle] != "B" else "C") + long[middle + 1 :]

    def opening(text: str) -> list[dict[str, Any]]:
        if shape == "plain text":
            return [{"role": "user", "content": text}]
        return _with_image(text)

    first = conversation.fingerprint(opening(long), salt)
    assert first is not None
    assert first.startswith(conversation.FINGERPRINT_PREFIX)
    assert conversation.fingerprint(opening("".join(list(long))), salt) == first  # a copy
    assert conversation.fingerprint(opening(changed), salt) != first
    assert conversation.fingerprint(opening(long[:-1]), salt) != first
    assert conversation.fingerprint(opening(long), b"other salt") != first
    later_turn = [*opening(long), {"role": "assistant", "content": "A cat."}]
    assert conversation.fingerprint(later_turn, salt) == first


def test_openings_without_a_long_string_keep_their_ids() -> None:
    """Ids already stored stay valid: up to `_LONG_TEXT` characters the whole text is MACed as
    it always was."""
    salt = b"k" * 32
    longest = _image(2, conversation._LONG_TEXT - len("data:image/png;base64,"))
    assert len(longest) == conversation._LONG_TEXT
    for messages in (_with_image(longest), [{"role": "user", "content": longest}]):
        text = conversation._canonical(conversation.opening_messages(messages) or [])
        assert longest in text
        digest = hashlib.blake2b(text.encode(), key=salt, digest_size=16).hexdigest()
        assert conversation.fingerprint(messages, salt) == conversation.FINGERPRINT_PREFIX + digest


@pytest.mark.parametrize(
    ("text", "steady"),
    [
        ("Be terse.", "Be terse."),
        ("Now: 2026-12-06 09:15:02.", "Now: 2026-12-06 \x1a:."),
        ("Tuesday, June 9, 2026, 03:04:20 PM +03:00", "Tuesday, June 9, 2026, \x1a: +\x1a:"),
        ("at 2026-12-06T09:15:02.123456Z", "at 2026-12-06T\x1a:Z"),
        (":x 9:05 a.m. or 11:05pm", ":x \x1a: or \x1a:"),
        ("ratio 16:9, port :8080, v1.2:3, 123:45", "ratio 16:9, port :8080, v1.2:3, 123:45"),
    ],
)
def test_the_clock_in_an_instruction_is_one_stand_in(text: str, steady: str) -> None:
    """Times of day (with seconds, fractions, AM/PM) become one stand-in; anything else with
    digits and colons stays as it is."""
    assert conversation._steady(text) == steady
    salt = b"k" * 32
    for role in ("system", "developer"):
        opening = [{"role": role, "content": text}, {"role": "user", "content": text}]
        expected = f"role\x1f{role}content\x1f{steady}\x1erole\x1fusercontent\x1f{text}\x1e"
        assert conversation._plain_canonical(opening) == expected
        parts = [{"role": role, "content": [{"type": "text", "text": text}]}, opening[1]]
        general = conversation._canonical(conversation.opening_messages(parts) or [])
        assert steady in general  # a list of parts: the same, in its JSON
    assert conversation.fingerprint([{"role": "system", "content": "At 09:15."}], salt) == (
        conversation.fingerprint([{"role": "system", "content": "At 21:40."}], salt)
    )
