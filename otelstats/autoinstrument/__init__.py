"""The directory `otelstats run` puts first on PYTHONPATH; its sitecustomize instruments at start.

`SITECUSTOMIZE_DIR` is that directory (the runner needs only this name from here).
"""

from __future__ import annotations

from pathlib import Path

SITECUSTOMIZE_DIR = Path(__file__).resolve().parent
