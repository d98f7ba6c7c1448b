"""Shutting down in multiprocessing's forked children, which end with `os._exit`.

A `multiprocessing.Process` or `Pool` worker started by fork runs its target and then leaves
through `os._exit`: no `atexit` handler runs there, so calls the child made in its last export
interval would be lost. multiprocessing runs its own exit finalizers first
(`multiprocessing.util.Finalize`); what is registered here joins them. Nothing is imported up
front: the hook looks for `multiprocessing.util` only in a forked child, where the fork came
from multiprocessing if that module is loaded.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import weakref
from typing import Protocol

EXIT_PRIORITY = 100
"""Before multiprocessing's own finalizers (its queues' at 10 and below): higher runs first."""


class Closable(Protocol):
    def shutdown(self) -> object:
        """Flush what is pending and stop."""


def shutdown_at_child_exit(target: Closable) -> None:
    """Call `target.shutdown()` when a multiprocessing child forked from this process ends."""
    if not hasattr(os, "register_at_fork"):
        return
    ref = weakref.ref(target)

    def after_in_child() -> None:
        util = sys.modules.get("multiprocessing.util")
        found = ref()
        if util is not None and found is not None:
            # Run by the child's Process._bootstrap after it clears the finalizers it inherited.
            util.register_after_fork(found, _arm)

    os.register_at_fork(after_in_child=after_in_child)


def _arm(target: Closable) -> None:
    util = sys.modules["multiprocessing.util"]
    util.Finalize(target, _last_shutdown, args=(target,), exitpriority=EXIT_PRIORITY)


def _last_shutdown(target: Closable) -> None:
    """The child is ending: SIGTERM is ignored from here on. `Pool.terminate()` (what leaving
    `with Pool() as pool:` calls) sends it to workers that are already on their way out, and a
    handler run now, on this thread, could wait for a lock this very shutdown holds (seen: the
    SDK's worker waiting on the Event this thread was setting), or end the process before the
    flush. The process ends right after this anyway."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    target.shutdown()
