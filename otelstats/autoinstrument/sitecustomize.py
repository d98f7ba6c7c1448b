"""Run by Python at start-up in every process `otelstats run` starts (it is first on PYTHONPATH).

Calls `otelstats.instrument()` with the OTELSTATS_* environment, then runs the sitecustomize this
one shadows, if any. It never stops the program: a failure is one line on stderr.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

METRICS_PORT_ENV = "OTELSTATS_METRICS_PORT"


def _instrument() -> None:
    try:
        from otelstats.bootstrap import instrument
        from otelstats.config import Settings

        settings = Settings.from_env()
        # Only this process serves the metrics port; Python subprocesses it starts still
        # record calls, but must not fight over the same port.
        os.environ.pop(METRICS_PORT_ENV, None)
        instrument(settings=settings)
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] != "otelstats":
            sys.stderr.write(f"otelstats: this process is not instrumented: {exc}\n")
            return
        # `otelstats run` started a Python that otelstats is not installed for (another venv,
        # pipx): this directory is on its path, the package is not.
        sys.stderr.write(
            f"otelstats: this process is not instrumented: otelstats is not installed for "
            f"{sys.executable}; install it there (pip install otelstats) to record its calls\n"
        )
    except Exception as exc:
        sys.stderr.write(f"otelstats: this process is not instrumented: {exc}\n")


def _chain() -> None:
    """Execute the next `sitecustomize` on sys.path (the one this module shadows)."""
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.stderr.write(f"otelstats: the sitecustomize at {spec.origin} failed: {exc}\n")


_instrument()
_chain()
