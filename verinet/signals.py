"""How verinet's long commands take SIGINT and SIGTERM: either as a request noted in a list, for a loop
that stops at a safe point (training, the ladder runner), or as KeyboardInterrupt, so ``finally`` blocks
run (Python's default for SIGTERM ends the process without them). Only the main thread can set handlers:
elsewhere these install nothing."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


_DEFAULT = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}


def interrupt(_signum: int, _frame: object) -> None:
    """A signal handler that stops the main thread as Ctrl-C does."""
    raise KeyboardInterrupt


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def stop_requests(enabled: bool = True, *, second_sigint_interrupts: bool = False) -> Iterator[list[str]]:
    """While this holds, SIGINT and SIGTERM only append their names to the yielded list, for a loop to
    check between units of work. With ``second_sigint_interrupts`` a second SIGINT raises KeyboardInterrupt
    at once (the user insists). A signal the process inherited as ignored (SIGINT in a background job)
    stays ignored. The previous handlers come back on exit."""
    requested: list[str] = []
    if not enabled or not _main_thread():
        yield requested
        return

    def note(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if second_sigint_interrupts and name == "SIGINT" and "SIGINT" in requested:
            raise KeyboardInterrupt
        requested.append(name)

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    caught = [s for s, h in previous.items() if h is not signal.SIG_IGN]
    for s in caught:
        signal.signal(s, note)
    try:
        yield requested
    finally:
        for s in caught:  # a handler installed from C (None) cannot be put back: Python's default instead
            signal.signal(s, previous[s] if previous[s] is not None else _DEFAULT[s])


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt in the main thread while this holds, so a command stops on it as on
    Ctrl-C and its ``finally`` blocks run."""
    if not _main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def stop_on_sigterm() -> None:
    """Make SIGTERM end this process as Ctrl-C does, from now on (no restore), so ``finally`` blocks and
    exit hooks run."""
    if _main_thread():
        signal.signal(signal.SIGTERM, interrupt)
