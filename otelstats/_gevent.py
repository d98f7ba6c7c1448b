"""gevent apps: the openai SDK's first request must not fork under the span processor's fork hook.

The SDK names the platform in a header of every request, and Python learns the processor name
on Linux by running `uname -p` in a subprocess, once per process, at the first request. Under
gevent's monkey-patching that fork runs the after-fork hooks of the OpenTelemetry SDK in the
child, and its batch processor's hook starts a thread, which yields to the child's copy of the
hub. The child then runs copies of the parent's greenlets until the hook returns: other calls
sent a second time, writes into the parent's connections, more children forked by those copies
(gevent issues #2196 and #2202). Without a batch processor the fork is harmless, so otelstats,
which installs one, learns the platform first: at once when gevent is already imported, else
when the app imports it (before it can patch anything). A process without gevent pays nothing.
"""

from __future__ import annotations

import contextlib
import platform
import sys
from types import ModuleType

from wrapt import register_post_import_hook


def settle_platform_for_gevent() -> None:
    """Have Python learn the platform (one `uname -p`) now if gevent is loaded, or when it is."""
    if "gevent" in sys.modules:
        _settle()
    else:
        register_post_import_hook(_settle, "gevent")


def _settle(_gevent: ModuleType | None = None) -> None:
    # `platform` caches what it learns. It catches a failing `uname` itself; nothing of this
    # may ever break the app's `import gevent`.
    with contextlib.suppress(Exception):
        platform.uname().processor  # noqa: B018
