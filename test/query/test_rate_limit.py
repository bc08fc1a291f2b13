"""Per-client token buckets: burst, refill, clients independent, memory bounded."""

from __future__ import annotations

import pytest

from llava3d_ros.query.rate_limit import ClientRateLimiter


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_burst_then_rate():
    clock = Clock()
    lim = ClientRateLimiter(rate_hz=2.0, burst=3, clock=clock)
    assert [lim.allow("a") for _ in range(4)] == [True, True, True, False]
    clock.t += 0.25  # half a token
    assert not lim.allow("a")
    clock.t += 0.25  # one token now
    assert lim.allow("a") and not lim.allow("a")
    clock.t += 100.0  # refills to the burst, no further
    assert [lim.allow("a") for _ in range(4)] == [True, True, True, False]


def test_clients_are_independent_and_anonymous_share_one_bucket():
    clock = Clock()
    lim = ClientRateLimiter(rate_hz=0.1, burst=1, clock=clock)
    assert lim.allow("a") and not lim.allow("a")
    assert lim.allow("b")
    assert lim.allow("") and not lim.allow("")  # every anonymous caller draws from ""


def test_zero_rate_is_unlimited():
    lim = ClientRateLimiter(rate_hz=0.0, burst=1)
    assert all(lim.allow("a") for _ in range(1000))


def test_remembered_clients_are_bounded():
    clock = Clock()
    lim = ClientRateLimiter(rate_hz=0.001, burst=1, max_clients=4, clock=clock)
    for i in range(100):
        assert lim.allow(f"made-up-{i}")
    assert len(lim._buckets) == 4
    assert not lim.allow("made-up-99")  # recent ones are still remembered


@pytest.mark.parametrize(("rate", "burst", "clients"), [(-1.0, 1, 1), (1.0, 0, 1), (1.0, 1, 0)])
def test_bad_settings(rate, burst, clients):
    with pytest.raises(ValueError):
        ClientRateLimiter(rate, burst, clients)
