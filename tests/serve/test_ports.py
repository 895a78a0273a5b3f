"""free_port: a port outside the kernel's bind(0) range, so Ray's processes cannot take it first."""

import socket

import pytest

from verinet.serve import ports


@pytest.mark.skipif(ports.ephemeral_low() <= ports.LOWEST, reason="this host's ephemeral range starts below 20000")
def test_free_port_is_bindable_and_below_the_ephemeral_range():
    high = min(ports.ephemeral_low(), ports.CEILING)
    seen = set()
    for _ in range(20):
        port = ports.free_port()
        assert ports.LOWEST <= port < high
        seen.add(port)
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
    assert len(seen) > 1  # random picks, not one fixed port


def test_a_taken_port_is_skipped_for_the_next_one(monkeypatch):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        monkeypatch.setattr(ports, "LOWEST", taken)
        monkeypatch.setattr(ports, "CEILING", taken + 2)  # candidates: taken, taken + 1
        monkeypatch.setattr(ports, "ephemeral_low", lambda: taken + 2)
        if not ports._binds("127.0.0.1", taken + 1):
            pytest.skip("the neighbouring port is in use too")
        assert {ports.free_port(tries=50) for _ in range(10)} == {taken + 1}


def test_a_port_held_on_another_address_is_skipped(monkeypatch):
    """Free on 127.0.0.1 but held on 127.0.0.2: a later bind to every address would fail."""
    with socket.socket() as held:
        held.bind(("127.0.0.2", 0))
        taken = held.getsockname()[1]
        assert ports._binds("127.0.0.1", taken) and not ports._binds("0.0.0.0", taken)
        monkeypatch.setattr(ports, "LOWEST", taken)
        monkeypatch.setattr(ports, "CEILING", taken + 1)  # the one candidate: fall back, with a warning
        monkeypatch.setattr(ports, "ephemeral_low", lambda: taken + 1)
        with pytest.warns(RuntimeWarning, match="no free port"):
            assert ports.free_port(tries=5) != taken


def test_ephemeral_low_reads_the_kernel_file_and_falls_back(tmp_path):
    f = tmp_path / "range"
    f.write_text("40000\t60999\n")
    assert ports.ephemeral_low(f) == 40000
    assert ports.ephemeral_low(tmp_path / "missing") == 32768
    f.write_text("garbage")
    assert ports.ephemeral_low(f) == 32768


def test_falls_back_to_a_kernel_port_with_a_warning_when_the_range_starts_low(monkeypatch):
    real_low = ports.ephemeral_low()
    monkeypatch.setattr(ports, "ephemeral_low", lambda: 15000)
    with pytest.warns(RuntimeWarning, match="ephemeral"):
        port = ports.free_port()
    assert port >= real_low  # the kernel's choice, not one from 20000-29999
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
