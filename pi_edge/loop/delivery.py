"""Which drift batches wait for the trainer's acknowledgement, and when to send one again.

Pure: the shipper (loop/shipper.py) passes the clock in and does the I/O. A batch on its way is a
`Flight`: a copy of it may wait for the broker's PUBACK (`mid` set), and the broker may have
taken one (`delivered`). The PUBACK never ends a flight — a broker killed before its next
autosave forgets what it acknowledged — only the trainer's acknowledgement does (`acked`), sent
after its store committed the batch. A flight the trainer has not acknowledged by its `due` time
is sent again, and each resend waits twice as long (`ResendPolicy`), so a trainer that is away
finds few copies of each batch queued for it. At most `capacity` batches of each machine type
are on their way (`full_types`): a type whose trainer is away does not hold up the others.

>>> d = Deliveries(ResendPolicy(ack_timeout_s=10, max_wait_s=40), capacity=2)
>>> d.send(token=7, batch_id=b"A" * 16, payload=b"..", windows=3, mid=1, now=0.0)
>>> d.puback(1, ok=True).delivered  # the broker took it: the rows stay
True
>>> [f.batch_id[:1] for f in d.due(now=10.0)]  # no ack from the trainer in 10 s
[b'A']
>>> d.resent(b"A" * 16, mid=2, now=10.0).due  # waits 20 s this time
30.0
>>> d.acked(b"A" * 16).token, len(d)  # the trainer's ack: now the rows may go
(7, 0)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["Deliveries", "Flight", "ResendPolicy"]


@dataclass(frozen=True, slots=True)
class ResendPolicy:
    """How long to wait for the trainer's acknowledgement before sending a batch again.

    >>> p = ResendPolicy(ack_timeout_s=30, max_wait_s=300)
    >>> [p.wait(n) for n in range(6)]
    [30.0, 60.0, 120.0, 240.0, 300.0, 300.0]
    """

    ack_timeout_s: float = 30.0
    max_wait_s: float = 600.0

    def __post_init__(self) -> None:
        if not 0 < self.ack_timeout_s <= self.max_wait_s:
            raise ValueError(
                f"resend policy: need 0 < ack_timeout_s ({self.ack_timeout_s}) ≤ max_wait_s "
                f"({self.max_wait_s})"
            )

    def wait(self, resends: int) -> float:
        """Seconds to wait after the first send (`resends` 0) or the n-th resend."""
        return float(min(self.ack_timeout_s * 2.0 ** min(resends, 32), self.max_wait_s))


@dataclass(frozen=True, slots=True)
class Flight:
    """One batch on its way: the buffer's `token` for its rows and the bytes sent."""

    token: int
    batch_id: bytes
    payload: bytes
    windows: int
    first_sent: float
    due: float  # send again at this time unless the trainer acknowledged it
    resends: int = 0
    mid: int | None = None  # a copy waits for this PUBACK
    delivered: bool = False  # the broker acknowledged a copy
    machine_type: str = "default"  # whose windows it carries (one type per batch)


class Deliveries:
    """The flights by batch id (and by the MQTT message id of a copy awaiting its PUBACK)."""

    def __init__(self, policy: ResendPolicy, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"deliveries capacity must be ≥ 1, got {capacity}")
        self.policy = policy
        self.capacity = capacity
        self._flights: dict[bytes, Flight] = {}
        self._by_mid: dict[int, bytes] = {}

    def __len__(self) -> int:
        return len(self._flights)

    @property
    def full(self) -> bool:
        """As many batches as `capacity` are on their way (of one type, or of several)."""
        return len(self._flights) >= self.capacity

    def full_types(self) -> frozenset[str]:
        """The machine types with `capacity` batches on their way: no new batch of theirs.

        >>> d = Deliveries(ResendPolicy(), capacity=1)
        >>> d.send(token=1, batch_id=b"F" * 16, payload=b"", windows=1, mid=1, now=0.0,
        ...        machine_type="fan")
        >>> sorted(d.full_types()), d.full
        (['fan'], True)
        """
        counts: dict[str, int] = {}
        for flight in self._flights.values():
            counts[flight.machine_type] = counts.get(flight.machine_type, 0) + 1
        return frozenset(kind for kind, n in counts.items() if n >= self.capacity)

    def flights(self) -> list[Flight]:
        """Every flight, oldest first."""
        return sorted(self._flights.values(), key=lambda f: f.first_sent)

    def send(
        self,
        *,
        token: int,
        batch_id: bytes,
        payload: bytes,
        windows: int,
        mid: int,
        now: float,
        machine_type: str = "default",
    ) -> None:
        """A new batch (of `machine_type`'s windows) went out as message `mid`."""
        if batch_id in self._flights:
            raise ValueError(f"batch {batch_id.hex()} is already on its way")
        self._flights[batch_id] = Flight(
            token,
            batch_id,
            payload,
            windows,
            now,
            now + self.policy.wait(0),
            mid=mid,
            machine_type=machine_type,
        )
        self._by_mid[mid] = batch_id

    def puback(self, mid: int, ok: bool) -> Flight | None:
        """The broker's PUBACK for message `mid`: with `ok` the flight is delivered (and goes on
        waiting for the trainer); without, it ends (the caller releases its rows). None if `mid`
        is no copy of a flight (a late PUBACK of a copy sent again or already acknowledged)."""
        batch_id = self._by_mid.pop(mid, None)
        flight = None if batch_id is None else self._flights.get(batch_id)
        if flight is None or flight.mid != mid:
            return None
        if not ok:
            del self._flights[flight.batch_id]
            return flight
        flight = dataclasses.replace(flight, mid=None, delivered=True)
        self._flights[flight.batch_id] = flight
        return flight

    def acked(self, batch_id: bytes) -> Flight | None:
        """The trainer stored `batch_id`: the flight ends (the caller deletes its rows). None if
        it is not on its way (acknowledged already, or sent by an earlier process)."""
        flight = self._flights.pop(batch_id, None)
        if flight is not None and flight.mid is not None:
            self._by_mid.pop(flight.mid, None)
        return flight

    def due(self, now: float) -> list[Flight]:
        """Flights to send again, past their due time, oldest first. A copy still awaiting its
        PUBACK then counts as lost too (paho resends one after a reconnect; a late PUBACK of
        the old copy is ignored)."""
        return [f for f in self.flights() if f.due <= now]

    def resent(self, batch_id: bytes, mid: int, now: float) -> Flight:
        """`batch_id` went out again as message `mid`; the next wait is twice as long."""
        flight = self._flights[batch_id]
        if flight.mid is not None:
            self._by_mid.pop(flight.mid, None)
        resends = flight.resends + 1
        flight = dataclasses.replace(
            flight, resends=resends, mid=mid, due=now + self.policy.wait(resends)
        )
        self._flights[batch_id] = flight
        self._by_mid[mid] = batch_id
        return flight

    def reconnected(self, now: float, grace_s: float) -> int:
        """Back on a broker that may have lost what it acknowledged (a crash before its
        autosave): every flight the broker had taken is due `grace_s` from now at the latest,
        time for the acknowledgements queued in the persistent session to arrive (a copy still
        awaiting its PUBACK is resent by paho on the new connection). Returns how many."""
        moved = 0
        for batch_id, f in list(self._flights.items()):
            if f.mid is None and f.due > now + grace_s:
                self._flights[batch_id] = dataclasses.replace(f, due=now + grace_s)
                moved += 1
        return moved

    def sooner(self, batch_id: bytes, due: float) -> None:
        """Send `batch_id` again by `due` at the latest (the broker had nobody to give it to)."""
        flight = self._flights.get(batch_id)
        if flight is not None and flight.due > due:
            self._flights[batch_id] = dataclasses.replace(flight, due=due)

    def oldest_age(self, now: float) -> float:
        """Seconds since the oldest flight was first sent; 0 with none."""
        return max((now - f.first_sent for f in self._flights.values()), default=0.0)

    def windows(self) -> int:
        return sum(f.windows for f in self._flights.values())
