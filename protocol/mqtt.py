"""MQTT client setup every role shares: MQTT 5, TCP_NODELAY, Last Will, address parsing.

paho-mqtt is imported only when a client is made, so `import protocol` stays stdlib + numpy.
`publish_many` hands a batch of QoS 0 messages to paho as one write (see its docstring).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

DEFAULT_PORT = 1883


def parse_address(address: str) -> tuple[str, int]:
    """('host', port) from 'host:port' or 'host'.

    >>> parse_address("127.0.0.1:18830"), parse_address("broker")
    (('127.0.0.1', 18830), ('broker', 1883))
    """
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, DEFAULT_PORT
    if not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ValueError(f"broker address {address!r} is not HOST:PORT (e.g. 127.0.0.1:1883)")
    return host, int(port)


def _nodelay(client: Any, userdata: Any, sock: Any) -> None:
    if hasattr(sock, "setsockopt"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def make_client(
    client_id: str,
    *,
    will_topic: str | None = None,
    will_payload: bytes | None = None,
    manual_ack: bool = False,
) -> mqtt.Client:
    """A paho 2.x MQTT 5 client with TCP_NODELAY and an optional retained Last Will.

    Then call `connect(...)` and `client.loop_start()`. With `manual_ack`, QoS 1 messages are
    acknowledged only by `client.ack(mid, qos)` — after the receiver stored them.
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    client.on_socket_open = _nodelay
    client.reconnect_delay_set(min_delay=1, max_delay=8)
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(100)
    if will_topic is not None:
        client.will_set(will_topic, will_payload, qos=1, retain=True)
    return client


def connect(
    client: mqtt.Client,
    address: str,
    *,
    clean_start: bool = True,
    session_expiry_s: int = 0,
    keepalive: int = 15,
) -> None:
    """Start connecting in the background; paho's loop retries with backoff until it works.

    `clean_start=False` with `session_expiry_s` > 0 gives a persistent session (the trainer's
    at-least-once intake of drift batches).
    """
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    host, port = parse_address(address)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = session_expiry_s
    client.connect_async(host, port, keepalive=keepalive, clean_start=clean_start, properties=props)


_PUBLISH_QOS0 = 0x30
_MAX_REMAINING = 268_435_455  # the largest remaining length a 4-byte varint can say


def _varint(n: int) -> bytes:
    """MQTT's variable byte integer (remaining length), 1–4 bytes."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish_packets(items: Sequence[tuple[str, bytes]], *, mqtt5: bool = True) -> bytes:
    """The wire bytes of one QoS 0, non-retained PUBLISH per (topic, payload), back to back.

    >>> publish_packets([("a/b", b"hi")]).hex()
    '30080003612f62006869'
    >>> publish_packets([("t", b"x"), ("t", b"y")], mqtt5=False).hex()
    '300400017478300400017479'
    """
    props = b"\x00" if mqtt5 else b""
    out = bytearray()
    for topic, payload in items:
        t = topic.encode()
        if not t or len(t) > 65535 or "+" in topic or "#" in topic:
            raise ValueError(f"cannot publish to topic {topic!r}: empty, too long or a wildcard")
        remaining = 2 + len(t) + len(props) + len(payload)
        if remaining > _MAX_REMAINING:
            raise ValueError(f"payload of {len(payload)} bytes is over MQTT's 256 MiB packet limit")
        out.append(_PUBLISH_QOS0)
        out += _varint(remaining)
        out += len(t).to_bytes(2, "big")
        out += t
        out += props
        out += payload
    return bytes(out)


def publish_many(
    client: mqtt.Client, items: Sequence[tuple[str, bytes]], *, max_pending: int = 256
) -> bool:
    """Queue QoS 0 messages for paho's network thread as one write; False if not sent.

    paho's `publish` costs a wake-up of its network thread and a `send` per message; a micro-batch
    of predictions goes out in one of each. The packets are the ones `publish` would write
    (MQTT 5: empty properties). Like QoS 0 `publish`, nothing is queued while disconnected; and
    when paho already holds `max_pending` unsent writes (the broker is not reading), the batch
    is refused rather than letting memory grow. Uses paho's packet queue (pinned paho-mqtt 2.1.0,
    covered by tests); without it, falls back to one `publish` per message.
    """
    if not items:
        return True
    import paho.mqtt.client as mqtt

    try:
        sock, pending, queue = client._sock, client._out_packet, client._packet_queue
    except AttributeError:  # a paho whose internals moved: the slow, public way
        return all(client.publish(t, p, qos=0).rc == mqtt.MQTT_ERR_SUCCESS for t, p in items)
    if sock is None or len(pending) >= max_pending:
        return False
    data = publish_packets(items, mqtt5=client.protocol == mqtt.MQTTv5)
    rc = queue(_PUBLISH_QOS0, data, 0, 0, mqtt.MQTTMessageInfo(0))
    return bool(rc == mqtt.MQTT_ERR_SUCCESS)
