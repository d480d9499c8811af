"""Eclipse Sparkplug B 3.0 for edgeloop: topics, ids, metrics, sequence numbers, payload codec.

pi_edge can publish as a Sparkplug B edge node (`pi_edge run --sparkplug GROUP`) so that a
SCADA host (Ignition, any Sparkplug host application) sees each machine as a device. This
package is the pure part: it builds topics and payloads and counts sequence numbers; the MQTT
shell is pi_edge/report/sparkplug.py. Topics (namespace `spBv1.0`; group, edge node and device ids
are edgeloop ids, so they never hold the `/ + #` that Sparkplug forbids):

    spBv1.0/{group}/NBIRTH/{node}            spBv1.0/{group}/DBIRTH/{node}/{device}
    spBv1.0/{group}/NDATA/{node}             spBv1.0/{group}/DDATA/{node}/{device}
    spBv1.0/{group}/NDEATH/{node}            spBv1.0/{group}/DDEATH/{node}/{device}
    spBv1.0/{group}/NCMD/{node}              spBv1.0/{group}/DCMD/{node}/{device}

>>> t = SparkplugTopics("plant1", "pi-1")
>>> t.nbirth, t.ddata("press.3")
('spBv1.0/plant1/NBIRTH/pi-1', 'spBv1.0/plant1/DDATA/pi-1/press.3')
>>> t.message_type("spBv1.0/plant1/NCMD/pi-1")
'NCMD'

The sequence number `seq` counts every message after NBIRTH (which has 0) up to 255 and wraps;
`bdSeq` counts MQTT sessions (one per CONNECT) and ties an NBIRTH to its NDEATH (the Will):

>>> s = Seq()
>>> [s.next() for _ in range(3)], s.reset(), s.next()
([0, 1, 2], 0, 1)
>>> next_bd_seq(None), next_bd_seq(7), next_bd_seq(255)
(0, 8, 0)

Payloads are protobuf, from Eclipse Tahu's `sparkplug_b.proto` (vendored beside this file with
its generated `sparkplug_b_pb2.py`; see README.md here for how to regenerate it). The codec is
in `payload.py` and imports protobuf (pi_edge's `edge` extra); this module does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from ..errors import PayloadError
from ..topics import check_id

__all__ = [
    "BD_SEQ",
    "MAX_SEQ",
    "MESSAGE_TYPES",
    "NAMESPACE",
    "REBIRTH",
    "DataType",
    "Metric",
    "Seq",
    "SparkplugTopics",
    "Value",
    "check_group",
    "next_bd_seq",
]

NAMESPACE = "spBv1.0"
MAX_SEQ = 255  # seq and bdSeq wrap from 255 to 0
BD_SEQ = "bdSeq"  # the NBIRTH/NDEATH metric that ties a birth to its death certificate
REBIRTH = "Node Control/Rebirth"  # NBIRTH: Boolean false; NCMD with true asks for new births
MESSAGE_TYPES = (
    "NBIRTH",
    "NDEATH",
    "NDATA",
    "NCMD",
    "DBIRTH",
    "DDEATH",
    "DDATA",
    "DCMD",
    "STATE",
)

Value = int | float | bool | str | None  # None: the metric is null (is_null)


class DataType(IntEnum):
    """The Sparkplug data types edgeloop uses (values of the proto's `DataType` enum)."""

    Int32 = 3
    Int64 = 4
    UInt32 = 7
    UInt64 = 8
    Float = 9
    Double = 10
    Boolean = 11
    String = 12


@dataclass(frozen=True, slots=True)
class Metric:
    """One Sparkplug metric: its name, data type and value (None: null), `timestamp_ms` since
    the epoch (None: the payload's own)."""

    name: str
    datatype: DataType
    value: Value
    timestamp_ms: int | None = None


def check_group(value: str) -> str:
    """`value` if it can be a Sparkplug group id (an edgeloop id: no `/ + #`), else a
    PayloadError that says which characters to use.

    >>> check_group("plant1")
    'plant1'
    >>> check_group("hall/1")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    protocol.errors.PayloadError: Sparkplug group id 'hall/1' is invalid; use 1-64 characters ...
    """
    return check_id(value, "Sparkplug group id")


@dataclass(frozen=True, slots=True)
class SparkplugTopics:
    """The topics of one edge node `node` in group `group`; devices are machine ids."""

    group: str
    node: str

    def __post_init__(self) -> None:
        check_group(self.group)
        check_id(self.node, "Sparkplug edge node id")

    def _node(self, kind: str) -> str:
        return f"{NAMESPACE}/{self.group}/{kind}/{self.node}"

    def _device(self, kind: str, device: str) -> str:
        return f"{self._node(kind)}/{check_id(device, 'Sparkplug device id')}"

    @property
    def nbirth(self) -> str:
        return self._node("NBIRTH")

    @property
    def ndeath(self) -> str:
        return self._node("NDEATH")

    @property
    def ndata(self) -> str:
        return self._node("NDATA")

    @property
    def ncmd(self) -> str:
        return self._node("NCMD")

    def dbirth(self, device: str) -> str:
        return self._device("DBIRTH", device)

    def ddata(self, device: str) -> str:
        return self._device("DDATA", device)

    def ddeath(self, device: str) -> str:
        return self._device("DDEATH", device)

    def dcmd(self, device: str) -> str:
        return self._device("DCMD", device)

    @property
    def dcmd_all(self) -> str:
        """The subscription filter for every device command of this node."""
        return f"{self._node('DCMD')}/+"

    def message_type(self, topic: str) -> str:
        """The message type of `topic` if it is one of this node's topics, else PayloadError.

        >>> SparkplugTopics("g", "n").message_type("spBv1.0/g/NCMD/other")
        Traceback (most recent call last):
        ...
        protocol.errors.PayloadError: topic 'spBv1.0/g/NCMD/other' is not one of Sparkplug edge \
node 'n' in group 'g'
        """
        parts = topic.split("/")
        if (
            len(parts) in (4, 5)
            and parts[0] == NAMESPACE
            and parts[1] == self.group
            and parts[2] in MESSAGE_TYPES
            and parts[3] == self.node
        ):
            return parts[2]
        raise PayloadError(
            f"topic {topic[:200]!r} is not one of Sparkplug edge node {self.node!r} in group "
            f"{self.group!r}",
            "bad_topic",
        )


class Seq:
    """The message sequence number `seq` of one edge node: 0..255, wrapping.

    NBIRTH takes 0 (`reset()`); every later NDATA, DBIRTH, DDATA and DDEATH takes the next.
    Not thread-safe: the one thread that publishes owns it.

    >>> s = Seq()
    >>> _ = [s.next() for _ in range(255)]
    >>> s.next(), s.next(), s.next()
    (255, 0, 1)
    """

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0

    def reset(self) -> int:
        """Start again (an NBIRTH): returns 0, the NBIRTH's own seq; the next message gets 1."""
        self._next = 1
        return 0

    def next(self) -> int:
        """The seq of the next message."""
        value = self._next
        self._next = (value + 1) % (MAX_SEQ + 1)
        return value


def next_bd_seq(previous: int | None) -> int:
    """The birth/death sequence number of the next MQTT session: 0 first, then +1 to 255,
    then 0 again. A value outside 0..255 (a damaged state file) starts over at 0."""
    if previous is None or not 0 <= previous <= MAX_SEQ:
        return 0
    return (previous + 1) % (MAX_SEQ + 1)
