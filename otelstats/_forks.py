"""Objects that start afresh in a fork child."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable


def in_fork_children(method: Callable[[], object]) -> None:
    """Call the bound `method` in every fork child of this process, as long as its object lives
    (held weakly: a fork hook cannot be unregistered)."""
    if not hasattr(os, "register_at_fork"):
        return
    ref = weakref.WeakMethod(method)

    def after_in_child() -> None:
        found = ref()
        if found is not None:
            found()

    os.register_at_fork(after_in_child=after_in_child)
