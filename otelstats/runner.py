"""`otelstats run -- cmd`: start a program with every Python process in it auto-instrumented.

The program gets our `autoinstrument` directory first on PYTHONPATH (its sitecustomize calls
`instrument()` at start-up) and the OTELSTATS_* variables; it runs as a child whose exit code we
return. SIGTERM sent to us is passed on; Ctrl-C reaches the child from the terminal directly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from .autoinstrument import SITECUSTOMIZE_DIR
from .errors import ConfigError
from .store import resolve_url


def build_env(
    db: str | Path | None = None,
    metrics_port: int | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The child's environment: `env` (default: ours) + PYTHONPATH + OTELSTATS_DB/METRICS_PORT."""
    child = dict(os.environ if env is None else env)
    python_path = child.get("PYTHONPATH")
    child["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SITECUSTOMIZE_DIR), python_path]))
    if db is not None:
        # Resolved here: a bad URL fails before the program starts, and a relative path still
        # means the same file if the program changes directory.
        url = resolve_url(db)
        if url.get_backend_name() == "sqlite" and url.database:
            child["OTELSTATS_DB"] = url.database
        else:
            child["OTELSTATS_DB"] = url.render_as_string(hide_password=False)
    if metrics_port is not None:
        if not 0 <= metrics_port <= 65535:
            raise ConfigError(f"--metrics-port must be 0-65535, got {metrics_port}")
        child["OTELSTATS_METRICS_PORT"] = str(metrics_port)
    return child


@contextmanager
def _forward_sigterm(process: subprocess.Popen[bytes]) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum: int, _frame: FrameType | None) -> None:
        process.send_signal(signum)

    previous_term = signal.signal(signal.SIGTERM, forward)
    # The terminal sends Ctrl-C to the child itself; we wait for it to finish.
    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)


def run_program(
    argv: Sequence[str],
    db: str | Path | None = None,
    metrics_port: int | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run `argv` instrumented and return its exit code (128 + N when killed by signal N)."""
    if not argv:
        raise ConfigError(
            "nothing to run: give a command after --, e.g. otelstats run -- python app.py"
        )
    child_env = build_env(db, metrics_port, env)
    try:
        process = subprocess.Popen(list(argv), env=child_env)
    except FileNotFoundError:
        raise ConfigError(f"command not found: {argv[0]}") from None
    except PermissionError:
        raise ConfigError(f"cannot execute {argv[0]}: permission denied") from None
    with process, _forward_sigterm(process):
        code = process.wait()
    return 128 - code if code < 0 else code
