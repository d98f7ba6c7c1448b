"""What an instrumentor holds survives a fork: a real `os.fork()` while another thread holds
the lock of the Responses API's chains (a pre-fork server forks while calls run)."""

from __future__ import annotations

import os
import threading
import time
import warnings

import pytest
from opentelemetry.metrics import NoOpMeter
from opentelemetry.trace import NoOpTracer

from otelstats._instr_telemetry import Options, Telemetry


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_a_thread_holds_the_chains_can_use_them() -> None:
    telemetry = Telemetry(NoOpTracer(), NoOpMeter("test"), Options())
    chains = telemetry.response_chains
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with chains._lock:
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(10)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
            pid = os.fork()
        if pid == 0:  # the child: the holding thread does not exist here
            chains.remember("resp_1", "conv_1")
            os._exit(0 if chains.get("resp_1") == "conv_1" else 1)
        deadline = time.monotonic() + 20
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if done[0] == 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the child hung on the lock a thread of its parent held at the fork")
        assert os.waitstatus_to_exitcode(done[1]) == 0
    finally:
        release.set()
        thread.join()
