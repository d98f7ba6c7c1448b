"""Shutting down in multiprocessing's children, which may end with `os._exit`.

A `multiprocessing.Process` or `Pool` worker started by fork or by the forkserver (Python
3.14's default on Linux) runs its target and then leaves through `os._exit`: no `atexit` handler
runs there, so calls the child made in its last export interval would be lost. multiprocessing
runs its own exit finalizers first (`multiprocessing.util.Finalize`); what is armed here joins
them, in every multiprocessing child:
- one forked from a process that made the target (a fork hook; multiprocessing is imported by
  then if it did the fork);
- one that made the target itself: while importing the main module anew (spawn,
  forkserver) or in its worker function;
- every later fork child of a process that had multiprocessing loaded when it made the target
  (multiprocessing's own after-fork registry, which forked children run).

Celery's prefork pool (billiard) is multiprocessing's fork with exits of its own: a pool worker
leaves through `os._exit` when it has run `--max-tasks-per-child` tasks, or at the worker's
shutdown, and runs none of multiprocessing's finalizers. Celery signals
`worker_process_shutdown` in the worker just before; with Celery loaded (in the process that
made the target, or in a fork child of it) the target is shut down there.
Nothing is imported up front.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import weakref
from typing import Protocol

logger = logging.getLogger(__name__)

EXIT_PRIORITY = 100
"""Before multiprocessing's own finalizers (its queues' at 10 and below): higher runs first."""
_FINALIZER = "_otelstats_exit_finalizer"
"""The attribute holding a target's exit finalizer; one inherited by a child is no longer
active there (a child clears the finalizers it inherits)."""


class Closable(Protocol):
    def shutdown(self) -> object:
        """Flush what is pending and stop."""


def shutdown_at_child_exit(target: Closable) -> None:
    """Call `target.shutdown()` when a multiprocessing child that holds it ends."""
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        # Run by a forked child's Process._bootstrap, after it clears the finalizers it
        # inherited (a spawned child runs none: it is armed right here, below).
        util.register_after_fork(target, _arm)
        if _in_child():
            _arm(target)
    ref = weakref.ref(target)
    _at_celery_worker_exit(ref)
    if not hasattr(os, "register_at_fork"):
        return

    def after_in_child() -> None:
        child_util = sys.modules.get("multiprocessing.util")
        found = ref()
        if child_util is not None and found is not None:
            child_util.register_after_fork(found, _arm)
        _at_celery_worker_exit(ref)

    os.register_at_fork(after_in_child=after_in_child)


def _at_celery_worker_exit(ref: weakref.ref[Closable]) -> None:
    """With Celery loaded, shut the target down when a pool worker is about to exit (Celery's
    `worker_process_shutdown`, sent in pool workers only). Connected once per target, however
    many forks see it; the signal holds the target weakly."""
    signals = sys.modules.get("celery.signals")
    shutdown = getattr(signals, "worker_process_shutdown", None)
    if shutdown is None:
        return

    def at_exit(**_: object) -> None:
        found = ref()
        if found is not None:
            _last_shutdown(found)

    try:
        shutdown.connect(at_exit, weak=False, dispatch_uid=f"otelstats-exit-{id(ref)}")
    except Exception:  # another Celery than the one known: its workers keep their own ways
        logger.warning("otelstats: could not join Celery's worker exit", exc_info=True)


def _in_child() -> bool:
    """This process is a multiprocessing child: importing the main module anew (spawn,
    forkserver: `_inheriting`, multiprocessing's own flag for that phase) or running its
    target (an app that sets up otelstats inside its worker function)."""
    process = sys.modules.get("multiprocessing.process")
    if process is None:
        return False
    inheriting = getattr(process.current_process(), "_inheriting", False)
    return bool(inheriting) or process.parent_process() is not None


def _arm(target: Closable) -> None:
    armed = getattr(target, _FINALIZER, None)
    if armed is not None and armed.still_active():
        return  # armed in this process already: both ways above saw the fork
    util = sys.modules["multiprocessing.util"]
    finalizer = util.Finalize(target, _last_shutdown, args=(target,), exitpriority=EXIT_PRIORITY)
    setattr(target, _FINALIZER, finalizer)


def _last_shutdown(target: Closable) -> None:
    """The child is ending: SIGTERM is ignored from here on. `Pool.terminate()` (what leaving
    `with Pool() as pool:` calls) sends it to workers that are already on their way out, and a
    handler run now, on this thread, could wait for a lock this very shutdown holds (seen: the
    SDK's worker waiting on the Event this thread was setting), or end the process before the
    flush. The process ends right after this anyway."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    target.shutdown()
