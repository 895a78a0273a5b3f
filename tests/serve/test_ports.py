"""free_port: a port outside the kernel's bind(0) range, so Ray's processes cannot take it first."""

import socket

from verinet.serve import ports


def test_free_port_is_bindable_and_below_the_ephemeral_range():
    low = ports.ephemeral_low()
    seen = set()
    for _ in range(20):
        port = ports.free_port()
        assert ports.LOWEST <= port < low
        seen.add(port)
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
    assert len(seen) > 1  # random picks, not one fixed port


def test_a_taken_port_is_never_returned(monkeypatch):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        monkeypatch.setattr(ports, "LOWEST", taken)
        monkeypatch.setattr(ports, "ephemeral_low", lambda: taken + 2)  # candidates: taken, taken + 1
        for _ in range(10):
            assert ports.free_port(tries=50) != taken


def test_ephemeral_low_reads_the_kernel_file_and_falls_back(tmp_path):
    f = tmp_path / "range"
    f.write_text("40000\t60999\n")
    assert ports.ephemeral_low(f) == 40000
    assert ports.ephemeral_low(tmp_path / "missing") == 32768
    f.write_text("garbage")
    assert ports.ephemeral_low(f) == 32768


def test_falls_back_to_a_kernel_port_when_the_range_starts_low(monkeypatch):
    monkeypatch.setattr(ports, "ephemeral_low", lambda: 15000)
    port = ports.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
