"""Signals become stop requests; a second signal takes its default action."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from mvit.runtime import preemption


def test_signal_requests_a_stop():
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        preemption.install_signal_handlers([signal.SIGUSR1])
        assert not preemption.stop_requested()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert preemption.stop_requested() and preemption.sync_stop_requested()
        assert "SIGUSR1" in preemption.stop_reason()
    finally:
        signal.signal(signal.SIGUSR1, previous)
        preemption.clear_stop_request()
    assert not preemption.stop_requested()


def test_second_signal_takes_the_default_action():
    code = (
        "import os, signal\n"
        "from mvit.runtime import preemption\n"
        "preemption.install_signal_handlers([signal.SIGTERM])\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "assert preemption.stop_requested()\n"
        "print('first handled', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "print('still alive', flush=True)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "first handled", done.stderr
    assert done.returncode == -signal.SIGTERM
