"""The per-replica map of run pins is bounded in bytes, not only in count: its ids and keys are
the executors' to choose (up to 256 characters each)."""

from __future__ import annotations

from service.app.pins import Pin, RunPins


def test_the_pin_map_stays_within_its_byte_budget_with_the_longest_ids_and_keys() -> None:
    pins = RunPins(max_bytes=1024 * 1024)
    pins.listening()
    pin = Pin(1, 1, 1, 0.0)
    for run in range(2000):
        keys = [(f"{run:05d}" + "K" * 251 + f"{i:03d}", pin) for i in range(20)]
        pins.put("w" * 250 + f"{run:06d}", "e" * 256, "u" * 256, keys, pins.epoch)
        assert pins.bytes <= pins.max_bytes
    assert 0 < len(pins) < 2000 * 20
    # The newest run is kept, the oldest went first.
    assert pins.get("w" * 250 + "001999", "e" * 256, "u" * 256) is not None
    assert pins.get("w" * 250 + "000000", "e" * 256, "u" * 256) is None


def test_dropping_runs_gives_their_bytes_back() -> None:
    pins = RunPins()
    pins.listening()
    pin = Pin(1, 1, 1, 0.0)
    pins.put("ws", "e1", "u1", [("A", pin), ("B", pin)], pins.epoch)
    pins.put("ws", "e1", "u2", [("A", pin)], pins.epoch)
    pins.put("ws", "e1", "u1", [("A", pin), ("C", pin)], pins.epoch)  # A again: no double count
    assert len(pins) == 4
    pins.drop_run("ws", "e1")
    assert (len(pins), pins.bytes) == (0, 0)
