"""Signals a worker obeys without ever leaving a claim half made.

SIGTERM (a scheduler's preemption) raises WorkerStopped, Ctrl-C (SIGINT) KeyboardInterrupt;
both wait while a claim or a result is being stored (`deferred_signals`), and are raised
as soon as it is (explorer.scaleout.claim says what each does to the running trial).
"""
from __future__ import annotations

import contextlib
import signal
import threading


class WorkerStopped(BaseException):
    """SIGTERM: release the running trial and exit 143 (a BaseException, like KeyboardInterrupt)."""


_critical = 0


_pending: list[int] = []


def _on_signal(signum, frame):
    if _critical:
        _pending.append(signum)  # raised when the claim or the result is stored
        return
    _raise_for(signum)


def _raise_for(signum):
    if signum == signal.SIGTERM:
        raise WorkerStopped()
    raise KeyboardInterrupt()


def install_signal_handlers() -> dict:
    """SIGTERM raises WorkerStopped, SIGINT KeyboardInterrupt; both wait while a claim or result is stored.

    Returns the handlers they replace, for restore_signal_handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}


def restore_signal_handlers(old: dict) -> None:
    for s, handler in old.items():
        signal.signal(s, handler)


@contextlib.contextmanager
def deferred_signals(hold: bool = False):
    """Signals wait until the block is done; then they are raised, or with `hold` kept for raise_pending."""
    global _critical
    _critical += 1
    try:
        yield
    finally:
        _critical -= 1
        if not hold:
            raise_pending()


def raise_pending() -> None:
    if not _critical and _pending:
        signum = _pending[0]
        _pending.clear()
        _raise_for(signum)
