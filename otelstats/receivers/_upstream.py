"""The upstream side of the recording proxy: where calls go, and which headers cross over.

Standard-library `http.client`: no extra dependency, and `read1()` hands over each chunk the
moment it arrives, so streams are never buffered.
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import ConfigError

CONVERSATION_HEADER = "X-Conversation-Id"
_HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
        "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
        # Recomputed or chosen by the proxy itself:
        "host", "content-length", "accept-encoding",
    }
)  # fmt: skip
_NOT_FORWARDED = _HOP_BY_HOP | {CONVERSATION_HEADER.lower()}


@dataclass(frozen=True)
class Upstream:
    """Where calls go: the base URL an OpenAI SDK would be given (e.g. http://host:8080/v1)."""

    scheme: str
    host: str
    port: int
    base_path: str

    @classmethod
    def parse(cls, url: str) -> Upstream:
        parts = urlsplit(url.strip())
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ConfigError(
                f"--upstream {url!r} is not an http(s) URL; give the base URL of an "
                "OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1"
            )
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise ConfigError(f"--upstream {url!r}: {exc}") from None
        # A bare host means the usual /v1 prefix; an explicit path is kept as given.
        path = parts.path.rstrip("/") or "/v1"
        return cls(parts.scheme, parts.hostname, port, path)

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


class UpstreamFailure(Exception):
    """The upstream could not be reached or did not answer in time."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type


def forward_headers(incoming: Iterable[tuple[str, str]], stream_requested: bool) -> dict[str, str]:
    """The client's request headers to send upstream (Authorization included)."""
    headers = {k: v for k, v in incoming if k.lower() not in _NOT_FORWARDED}
    # Identity, so that usage can be read from the bytes that pass through.
    headers["Accept-Encoding"] = "identity"
    if stream_requested:
        headers.setdefault("Accept", "text/event-stream")
    return headers


def response_headers(resp: http.client.HTTPResponse) -> list[tuple[str, str]]:
    """The upstream's response headers to pass back to the client."""
    # CORS grants are the upstream's to give for itself: passed on, an upstream's
    # `Access-Control-Allow-Origin: *` would let any web page use this loopback proxy.
    return [
        (k, v)
        for k, v in resp.getheaders()
        if k.lower() not in _HOP_BY_HOP and not k.lower().startswith("access-control-")
    ]
