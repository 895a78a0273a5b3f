"""verinet.signals: signals as stop requests, or as KeyboardInterrupt, and the handlers put back."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from verinet.signals import sigterm_interrupts, stop_on_sigterm, stop_requests


def _handlers():
    return signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)


class _Missed(Exception):
    pass


@pytest.fixture(autouse=True)
def sigterm_caught():
    """A SIGTERM that verinet's handler failed to take fails the test instead of ending pytest."""
    def missed(_signum, _frame):
        raise _Missed("SIGTERM reached the handler from before the test")

    before = signal.signal(signal.SIGTERM, missed)
    yield
    signal.signal(signal.SIGTERM, before)


def test_signals_are_noted_in_order_and_the_handlers_come_back(sigint_caught):
    before = _handlers()
    with stop_requests() as requested:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # without second_sigint_interrupts, only noted again
    assert requested == ["SIGTERM", "SIGINT", "SIGINT"]
    assert _handlers() == before


def test_a_second_sigint_interrupts_when_asked(sigint_caught):
    with pytest.raises(KeyboardInterrupt):
        with stop_requests(second_sigint_interrupts=True) as requested:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
            assert requested == ["SIGTERM", "SIGINT"]
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM).__name__ == "missed"  # put back too


def test_an_inherited_ignored_sigint_stays_ignored():
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stop_requests() as requested:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
        assert requested == []
    finally:
        signal.signal(signal.SIGINT, before)


def test_disabled_or_off_the_main_thread_nothing_is_installed():
    before = _handlers()
    with stop_requests(enabled=False) as requested:
        assert _handlers() == before
    assert requested == []
    seen = []

    def worker():
        with stop_requests() as r, sigterm_interrupts():
            seen.append((_handlers(), r))
        stop_on_sigterm()
        seen.append(_handlers())

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == [(before, []), before]


def test_sigterm_interrupts_raises_keyboard_interrupt_and_puts_the_handler_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with sigterm_interrupts():
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_handler_python_cannot_put_back_gives_way_to_the_default(sigint_caught, monkeypatch):
    real = signal.getsignal
    monkeypatch.setattr(signal, "getsignal", lambda s: None if s == signal.SIGINT else real(s))  # set from C
    with stop_requests():
        pass
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # not the noting handler, which would
    # swallow every later Ctrl-C


def test_stop_on_sigterm_keeps_its_handler():
    before = signal.getsignal(signal.SIGTERM)
    try:
        stop_on_sigterm()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, before)
