"""The shipper's delivery state (pure): PUBACK never ends a flight, the trainer's ack does;
resends back off; a reconnect makes what the broker had taken due soon."""

from __future__ import annotations

import pytest

from pi_edge.loop.delivery import Deliveries, ResendPolicy

A, B = b"A" * 16, b"B" * 16


def two_in_flight() -> Deliveries:
    d = Deliveries(ResendPolicy(ack_timeout_s=10, max_wait_s=40), capacity=2)
    d.send(token=1, batch_id=A, payload=b"a", windows=3, mid=11, now=0.0)
    d.send(token=2, batch_id=B, payload=b"b", windows=5, mid=12, now=1.0)
    return d


def test_a_puback_keeps_the_flight_until_the_trainer_acknowledges() -> None:
    d = two_in_flight()
    assert d.full and d.windows() == 8
    flight = d.puback(11, ok=True)
    assert flight is not None and flight.delivered and flight.mid is None
    assert len(d) == 2
    assert d.acked(A) is not None and len(d) == 1 and not d.full
    assert d.acked(A) is None  # a second ack of the same batch is unknown


def test_a_refused_puback_ends_the_flight_for_its_rows_to_be_released() -> None:
    d = two_in_flight()
    flight = d.puback(12, ok=False)
    assert flight is not None and flight.token == 2 and len(d) == 1


def test_a_late_puback_of_an_older_copy_is_ignored() -> None:
    d = two_in_flight()
    d.resent(A, mid=21, now=10.0)
    assert d.puback(11, ok=False) is None  # the first copy's PUBACK, after the resend
    assert len(d) == 2
    assert d.puback(21, ok=True) is not None


def test_an_ack_before_the_puback_ends_the_flight_and_the_puback_is_ignored() -> None:
    d = two_in_flight()
    assert d.acked(A) is not None
    assert d.puback(11, ok=True) is None


def test_resends_wait_twice_as_long_each_time_up_to_the_cap() -> None:
    d = two_in_flight()
    d.puback(11, ok=True)
    times = []
    now = 0.0
    for _ in range(5):
        (due,) = [f for f in d.due(now + 1000) if f.batch_id == A]
        now = due.due
        assert [f.batch_id for f in d.due(now - 0.01)] in ([], [B])
        times.append(now)
        d.resent(A, mid=100 + len(times), now=now)
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert gaps == [10.0, 20.0, 40.0, 40.0, 40.0]


def test_after_a_reconnect_what_the_broker_took_is_due_within_the_grace() -> None:
    d = two_in_flight()
    d.puback(11, ok=True)  # A: the broker took it (and may have lost it in a crash)
    assert d.reconnected(now=2.0, grace_s=0.5) == 1
    assert [f.batch_id for f in d.due(2.5)] == [A]  # B awaits its PUBACK: paho resends it


def test_capacity_and_policy_are_checked() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Deliveries(ResendPolicy(), capacity=0)
    with pytest.raises(ValueError, match="ack_timeout_s"):
        ResendPolicy(ack_timeout_s=30, max_wait_s=10)
    d = two_in_flight()
    with pytest.raises(ValueError, match="already"):
        d.send(token=3, batch_id=A, payload=b"", windows=1, mid=13, now=2.0)


def test_a_copy_nobody_received_is_due_sooner_never_later() -> None:
    d = two_in_flight()
    d.puback(11, ok=True)  # PUBACK 0x10: taken, but no trainer session to queue it for
    d.sooner(A, 3.0)
    assert [f.batch_id for f in d.due(3.0)] == [A]
    d.sooner(B, 50.0)  # later than its own due time (11 s): unchanged
    assert [f.batch_id for f in d.due(11.0)] == [A, B]
    d.sooner(b"C" * 16, 1.0)  # not on its way: nothing happens
    assert len(d) == 2
