"""Small helpers shared by the pipeline tests."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path


def count_calls(db: Path) -> int:
    """Rows in `calls`, read with the stdlib driver (independent of the code under test)."""
    conn = sqlite3.connect(db)
    try:
        (n,) = conn.execute("SELECT count(*) FROM calls").fetchone()
    finally:
        conn.close()
    return int(n)


def make_mutable(path: Path) -> None:
    subprocess.run(["chattr", "-i", str(path)], check=True)
