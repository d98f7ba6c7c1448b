"""plotly.min.js from the installed `plotly` package, as the dashboard serves it.

The bundle (plotly.js 3 and later) is a UMD wrapper around one factory: an arrow function of about
5 MB passed as an argument. V8 compiles such a function lazily, so while the file streams in,
Chromium's background compiler only pre-parses it, and the factory's first call parses all of it
again on the main thread, in front of every chart (about 200 ms on a 2-core machine). Put in
parentheses, the factory is what V8 takes for a function about to be called, and it is compiled
with the rest of the file on the background thread while the bytes arrive.

Parentheses around an expression change nothing else: the served text is the installed text with
two characters added, `(` before the factory and `)` after it. A bundle whose wrapper is not the
expected one (another plotly release) is served exactly as installed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

# The wrapper plotly.js's build puts around its factory, up to the factory's first character.
_UMD_HEAD = re.compile(
    r"\(\s*function\s*\(root,\s*factory\)\s*\{.{0,400}?\}\s*"
    r'\(\s*typeof self !== "undefined" \? self : this,\s*(?=\(\)\s*=>\s*\{)',
    re.DOTALL,
)
# After the factory's closing brace: the end of the wrapper's call and of its parentheses.
_UMD_TAIL = "}));"
_HEAD_WITHIN = 4096


def plotly_js_path() -> Path:
    """plotly.min.js as shipped inside the `plotly` Python package (no CDN, no download)."""
    return Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))


def eager_factory(text: str) -> str | None:
    """`text` with its UMD factory in parentheses, or None if `text` is not wrapped that way."""
    head = _UMD_HEAD.search(text, 0, _HEAD_WITHIN)
    body_end = len(text.rstrip())
    if head is None or not text.startswith(_UMD_TAIL, body_end - len(_UMD_TAIL)):
        return None
    start = head.end()
    close = body_end - len(_UMD_TAIL) + 1  # just after the factory's closing brace
    return text[:start] + "(" + text[start:close] + ")" + text[close:]


@dataclass(frozen=True)
class PlotlyBundle:
    """The bytes the dashboard serves as plotly.min.js, with their validators."""

    body: bytes
    etag: str
    last_modified: datetime
    eager: bool  # False: served as installed (the wrapper was not recognised)

    @classmethod
    def load(cls, path: Path) -> PlotlyBundle:
        raw = path.read_bytes()
        try:
            wrapped = eager_factory(raw.decode("utf-8"))
        except UnicodeDecodeError:  # not the text plotly ships: serve it untouched
            wrapped = None
        body = raw if wrapped is None else wrapped.encode("utf-8")
        return cls(
            body=body,
            etag=hashlib.sha256(body).hexdigest()[:32],
            last_modified=datetime.fromtimestamp(int(path.stat().st_mtime), timezone.utc),
            eager=wrapped is not None,
        )
