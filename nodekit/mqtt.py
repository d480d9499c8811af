"""MQTT client setup every role shares: MQTT 5, TCP_NODELAY, Last Will, credentials and TLS.

`make_client` makes the paho client; `connect` applies the one `Credentials` object (user,
password, TLS) and returns a `ConnectionWatch` that says whether the broker let the client
in, and if not, why and what to check; `start_loop` starts paho's network thread and keeps
hold of it (for the watchdog). paho-mqtt is imported only when a client is made.

paho's private attributes are used in one place only, `publish_many`, the measured hot path of
a node's predictions: it queues a micro-batch of QoS 0 PUBLISH packets as one write (paho's
public `publish` costs a wake-up of the network thread and a `send` per message). It falls back
to the public `publish` when those attributes are missing, and tests/nodekit/test_publish_many.py
pins the behaviour on the pinned paho-mqtt 2.1.0.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocol.errors import ConfigError

from .errors import BrokerRefusedError

if TYPE_CHECKING:
    from typing import TypeAlias

    import paho.mqtt.client as mqtt
    from paho.mqtt.client import ConnectFlags as ConnectFlags  # noqa: PLC0414 - re-exported
    from paho.mqtt.client import DisconnectFlags as DisconnectFlags  # noqa: PLC0414 - re-exported
    from paho.mqtt.client import MQTTMessage
    from paho.mqtt.properties import Properties as Properties  # noqa: PLC0414 - re-exported
    from paho.mqtt.reasoncodes import ReasonCode as ReasonCode  # noqa: PLC0414 - re-exported

    # The paho types every role's callbacks take, named once at the boundary (paho-mqtt 2.x,
    # MQTT 5, CallbackAPIVersion.VERSION2); roles import them under TYPE_CHECKING.
    Client: TypeAlias = mqtt.Client
    Message: TypeAlias = MQTTMessage

__all__ = [
    "CONNECTIONS",
    "DEFAULT_PORT",
    "LOGIN_SEPARATOR",
    "ConnectionWatch",
    "Credentials",
    "TLSParameters",
    "connect",
    "make_client",
    "parse_address",
    "publish_confirmed",
    "publish_many",
    "publish_packets",
    "start_loop",
]

log = logging.getLogger(__name__)

DEFAULT_PORT = 1883

# Where a user sets each credential (nodekit.settings declares them; a test keeps these true).
USER_WAYS = "--mqtt-user or EDGELOOP_MQTT_USER"
PASSWORD_WAYS = "--mqtt-password-file, EDGELOOP_MQTT_PASSWORD_FILE or EDGELOOP_MQTT_PASSWORD"
CA_WAYS = "--mqtt-ca-file or EDGELOOP_MQTT_CA_FILE"
CERT_WAYS = "--mqtt-cert-file and --mqtt-key-file (EDGELOOP_MQTT_CERT_FILE, EDGELOOP_MQTT_KEY_FILE)"

# Per-device identities (scripts/secure_profile.py): the broker binds each client id to its login
# (`use_username_as_clientid`), so two connections with one login would take each other's
# session. A process's second connection therefore logs in as `<user>~<purpose>`, with the same
# password; `~` is never part of a node id, so such a login can never name another node.
LOGIN_SEPARATOR = "~"
CONNECTIONS = {
    "batches": "pi_edge's batch shipper (its own persistent session for the trainer's acks)",
    "spb": "pi_edge's Sparkplug B edge node (`--sparkplug`: its own Will, NDEATH)",
    "cli": "a one-shot command next to the running service (ha-remove, publish, control)",
}


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


@dataclass(frozen=True, slots=True)
class TLSParameters:
    """TLS for a client: the CA the broker's certificate must chain to (None: the system's CA
    store) and, for a broker that asks for one, a client certificate with its key.

    The broker's name is always checked against its certificate, so connect by a name or IP
    address that the certificate lists (scripts/secure_profile.py --host adds one).

    >>> TLSParameters(Path("ca.crt"), cert_file=Path("edge.crt"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    protocol.errors.ConfigError: a client certificate needs its key and a key its certificate: ...
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError(
                "a client certificate needs its key and a key its certificate: set both "
                + CERT_WAYS
            )

    def context(self) -> ssl.SSLContext:
        """A client SSLContext: TLS ≥ 1.2, certificate and host name verified."""
        try:
            ctx = ssl.create_default_context(
                cafile=None if self.ca_file is None else str(self.ca_file)
            )
            if self.cert_file is not None and self.key_file is not None:
                ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ConfigError(
                f"cannot load the TLS files (CA {self.ca_file}, certificate {self.cert_file}, "
                f"key {self.key_file}): {exc}; check {CA_WAYS} and {CERT_WAYS}"
            ) from exc
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx


@dataclass(frozen=True, slots=True)
class Credentials:
    """Who a client is to the broker and how it talks to it: user, password and TLS.

    One object per client, built from a role's settings (`nodekit.settings.MqttSettings`)
    and applied by `connect`. The password never appears in a repr or a log line.

    >>> c = Credentials("edge", "s3cret", TLSParameters(Path("ca.crt")))
    >>> "s3cret" in repr(c), c.describe()
    (False, "user 'edge' over TLS (CA ca.crt)")
    >>> Credentials().describe()
    'anonymous over plain TCP'
    """

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TLSParameters | None = None
    # the broker binds client ids to logins: each further connection has its own (`for_`)
    per_connection: bool = False

    def for_(self, purpose: str) -> Credentials:
        """The login of this process's `purpose` connection (one of CONNECTIONS).

        With `per_connection` (EDGELOOP_MQTT_LOGIN_PER_CONNECTION, set by the secure profile's
        env files) that is `<user>~<purpose>` with the same password and TLS; otherwise these
        same credentials.

        >>> Credentials("pi-7", "pw", per_connection=True).for_("batches").username
        'pi-7~batches'
        >>> Credentials("edge", "pw").for_("batches").username
        'edge'
        """
        if purpose not in CONNECTIONS:
            raise ValueError(f"unknown connection {purpose!r}; known: {', '.join(CONNECTIONS)}")
        if not self.per_connection or self.username is None:
            return self
        return replace(self, username=f"{self.username}{LOGIN_SEPARATOR}{purpose}")

    def __post_init__(self) -> None:
        if self.password is not None and self.username is None:
            raise ConfigError(f"an MQTT password without a user name: set {USER_WAYS}")
        if self.username is not None and not self.username:
            raise ConfigError(f"the MQTT user name is empty: set {USER_WAYS} or unset it")

    def describe(self) -> str:
        """'user X over TLS (CA file)' for log lines; never the password."""
        who = "anonymous" if self.username is None else f"user {self.username!r}"
        if self.tls is None:
            return f"{who} over plain TCP"
        ca = "the system's CAs" if self.tls.ca_file is None else f"CA {self.tls.ca_file}"
        cert = "" if self.tls.cert_file is None else f", certificate {self.tls.cert_file}"
        return f"{who} over TLS ({ca}{cert})"


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

    Set its callbacks, then call `connect(client, address, credentials=...)` and
    `client.loop_start()`. With `manual_ack`, QoS 1 messages are acknowledged only by
    `client.ack(mid, qos)` — after the receiver stored them.
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
    client.reconnect_delay_set(min_delay=1, max_delay=2)
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(100)
    if will_topic is not None:
        client.will_set(will_topic, will_payload, qos=1, retain=True)
    return client


_LOOPS: weakref.WeakKeyDictionary[Any, threading.Thread] = weakref.WeakKeyDictionary()
_LOOPS_LOCK = threading.Lock()


def start_loop(client: mqtt.Client) -> threading.Thread:
    """`client.loop_start()`, returning paho's network thread (also kept for `network_thread`).

    paho has no public handle on that thread, so it is found with `threading` alone: the thread
    that `loop_start` added (paho names it `paho-mqtt-client-<id>`, which settles a tie when
    another thread starts at the same moment).
    """
    with _LOOPS_LOCK:
        before = set(threading.enumerate())
        rc = client.loop_start()
        new = [t for t in threading.enumerate() if t not in before]
        if len(new) > 1:
            new = [t for t in new if t.name.startswith("paho-mqtt-client-")] or new
        if int(rc) != 0 or not new:
            raise RuntimeError(f"paho did not start its network thread (rc {rc})")
        _LOOPS[client] = new[0]
        return new[0]


def network_thread(client: Any) -> threading.Thread | None:
    """The network thread `start_loop` started for `client` (None if it never did)."""
    return _LOOPS.get(client)


# MQTT 5 CONNACK reason codes that retrying with the same settings cannot cure, and what to do.
_REFUSALS: dict[int, tuple[str, str]] = {
    0x84: ("Unsupported protocol version", "the broker does not speak MQTT 5; use Mosquitto ≥ 2"),
    0x85: ("Client identifier not valid", "the broker refuses this client id; change the node id"),
    0x86: (
        "Bad user name or password",
        f"check the user ({USER_WAYS}) and the password ({PASSWORD_WAYS}) against the "
        "broker's password file",
    ),
    0x87: (  # Mosquitto 2.0 answers a wrong password with this too
        "Not authorized",
        f"the broker admits no anonymous client, and not this user with this password: check "
        f"the user ({USER_WAYS}) and the password ({PASSWORD_WAYS}) against the broker's "
        "password file",
    ),
    0x8A: ("Banned", "the broker's administrator has banned this client"),
    0x8C: ("Bad authentication method", "the broker wants another authentication method"),
}
_NAMES = {
    0x80: "Unspecified error",
    0x81: "Malformed packet",
    0x82: "Protocol error",
    0x83: "Implementation specific error",
    0x88: "Server unavailable",
    0x89: "Server busy",
    0x97: "Quota exceeded",
    0x9F: "Connection rate exceeded",
}
_TLS_FATAL = ("ALERT", "WRONG_VERSION_NUMBER", "CERTIFICATE", "UNKNOWN_CA")


class ConnectionWatch:
    """What happened to one client's attempts to connect: connected, refused, or unreachable.

    `connect` attaches it to a client: it sees every CONNACK and every failed socket or TLS
    handshake (paho would otherwise retry those in silence). A refusal that retrying cannot
    cure — bad password, not authorized, a broker certificate that does not verify — is logged
    with its reason code and the settings to check; after `give_up_after` such refusals in a
    row, `failure()` returns the `BrokerRefusedError` that the tool should exit with. A broker that
    is down is never given up on: paho retries with backoff and the state says so.

    >>> w = ConnectionWatch("hub:8883", Credentials("edge", "x"), give_up_after=2)
    >>> w.note_connack(0x86); w.state
    'refused: Bad user name or password (CONNACK 0x86)'
    >>> w.failure() is None
    True
    >>> w.note_connack(0x86); print(w.failure())  # doctest: +ELLIPSIS
    broker hub:8883 refused user 'edge' over plain TCP: Bad user name or ... check the user ...
    >>> w.note_connack(0); w.state, w.failure(), w.refusals
    ('connected', None, 2)
    """

    def __init__(
        self,
        address: str,
        credentials: Credentials | None = None,
        *,
        give_up_after: int = 3,
        log_every_s: float = 60.0,
    ) -> None:
        self.address = address
        self.credentials = credentials or Credentials()
        self.give_up_after = give_up_after
        self._log_every_s = log_every_s
        self._lock = threading.Lock()
        self._state = "connecting"
        self._in_a_row = 0
        self._refusals = 0
        self._last: BrokerRefusedError | None = None
        self._awaiting_connack = False
        self._logged: dict[str, float] = {}
        self._connected = threading.Event()

    # -- what a tool reads ---------------------------------------------------------------
    @property
    def state(self) -> str:
        """'connecting', 'connected', 'refused: … (CONNACK 0x86)', 'TLS failed: …' or
        'unreachable: …' — for a status message or a dashboard."""
        with self._lock:
            return self._state

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def refusals(self) -> int:
        """Refusals (CONNACK or TLS) since the client was made."""
        with self._lock:
            return self._refusals

    def failure(self) -> BrokerRefusedError | None:
        """The refusal to exit with once `give_up_after` came in a row; else None."""
        with self._lock:
            return self._last if self._in_a_row >= self.give_up_after else None

    def wait(self, timeout: float) -> None:
        """Block until connected; raise BrokerRefusedError at once when refused, or after
        `timeout` s a BrokerRefusedError that says what was seen (nothing, or the last error)."""
        deadline = time.monotonic() + timeout
        while not self._connected.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
            with self._lock:
                last, state = self._last, self._state
            if last is not None:
                raise last
            if time.monotonic() >= deadline:
                raise BrokerRefusedError(
                    f"no connection to the MQTT broker at {self.address} within {timeout:g} s "
                    f"({state}); is it running and is this its address? "
                    f"(--broker HOST:PORT or EDGELOOP_BROKER; TLS: {CA_WAYS})"
                )

    # -- what paho's thread reports ------------------------------------------------------
    def note_connack(self, reason_code: Any) -> None:
        """Record a CONNACK (paho's ReasonCode or an int); log a refusal with what to do."""
        code = int(getattr(reason_code, "value", reason_code))
        with self._lock:
            self._awaiting_connack = False
        if code < 0x80:
            with self._lock:
                self._state, self._in_a_row, self._last = "connected", 0, None
            self._connected.set()
            return
        name, advice = _REFUSALS.get(code, (_NAMES.get(code, str(reason_code)), ""))
        self._connected.clear()
        text = f"refused: {name} (CONNACK 0x{code:02X})"
        if advice:
            error = BrokerRefusedError(
                f"broker {self.address} refused {self.credentials.describe()}: {name} "
                f"(CONNACK 0x{code:02X}); {advice}",
                code,
                name,
            )
            self._refused(text, error)
        else:  # busy, unavailable, quota: the broker's trouble, worth retrying
            self._transient(text, f"broker {self.address} refused for now: {name} (0x{code:02X})")

    def note_socket_error(self, exc: OSError) -> None:
        """Record a failed connect or TLS handshake (paho then retries with backoff)."""
        self._connected.clear()
        if isinstance(exc, ssl.SSLError) and (
            isinstance(exc, ssl.SSLCertVerificationError)
            or any(k in (exc.reason or "") for k in _TLS_FATAL)
        ):
            detail = getattr(exc, "verify_message", None) or exc.reason or str(exc)
            error = BrokerRefusedError(
                f"TLS with the broker at {self.address} failed: {detail}; check {CA_WAYS} "
                "(the CA that signed the broker's certificate), that the address is a name or "
                f"IP the certificate lists, that this is the broker's TLS port, and {CERT_WAYS} "
                "if the broker requires a client certificate",
                None,
                f"TLS: {detail}",
            )
            self._refused(f"TLS failed: {detail}", error)
            return
        self._transient(
            f"unreachable: {exc}", f"cannot reach the broker at {self.address}: {exc}; retrying"
        )

    def note_sent_connect(self) -> None:
        """The socket (and TLS) is up and CONNECT went out; a CONNACK should follow."""
        with self._lock:
            self._awaiting_connack = True

    def note_disconnect(self) -> None:
        """The connection closed: after a CONNACK a plain loss; before one, a broker that
        hung up on us — most often a plain-TCP client on a TLS port (or the other way)."""
        self._connected.clear()
        with self._lock:
            early, self._awaiting_connack = self._awaiting_connack, False
            if self._state == "connected":
                self._state = "reconnecting"
        if early:
            hint = (
                f"if it listens with TLS there, set {CA_WAYS}"
                if self.credentials.tls is None
                else f"if it requires a client certificate, set {CERT_WAYS}"
            )
            self._transient(
                "closed before CONNACK",
                f"the broker at {self.address} closed the connection before answering "
                f"({self.credentials.describe()}); {hint}; else it may be full "
                "(max_connections) or restarting",
            )

    def _refused(self, state: str, error: BrokerRefusedError) -> None:
        with self._lock:
            self._state, self._last = state, error
            self._in_a_row += 1
            self._refusals += 1
        self._log(logging.ERROR, state, str(error))

    def _transient(self, state: str, message: str) -> None:
        with self._lock:
            self._state, self._in_a_row, self._last = state, 0, None
        self._log(logging.WARNING, state, message)

    def _log(self, level: int, key: str, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._logged.get(key)
            if last is not None and now - last < self._log_every_s:
                return
            self._logged[key] = now
        log.log(level, "%s", message)

    def attach(self, client: Any) -> None:
        """See the client's CONNACKs (around its on_connect) and failed (re)connects."""
        inner_connect = client.on_connect
        inner_disconnect = client.on_disconnect

        def on_connect(c: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
            self.note_connack(rc)
            if inner_connect is not None:
                inner_connect(c, userdata, flags, rc, props)

        def on_disconnect(c: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
            self.note_disconnect()
            if inner_disconnect is not None:
                inner_disconnect(c, userdata, flags, rc, props)

        reconnect = client.reconnect

        def watched_reconnect() -> Any:
            try:
                rc = reconnect()
            except OSError as exc:
                self.note_socket_error(exc)
                raise
            self.note_sent_connect()
            return rc

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        setattr(client, "reconnect", watched_reconnect)  # noqa: B010 - paho's loop calls it


def connect(
    client: mqtt.Client,
    address: str,
    *,
    credentials: Credentials | None = None,
    clean_start: bool = True,
    session_expiry_s: int = 0,
    keepalive: int = 15,
) -> ConnectionWatch:
    """Apply `credentials` (user, password, TLS) and start connecting in the background.

    Call it after setting the client's callbacks and before `loop_start()`; paho's loop then
    retries with backoff. The returned `ConnectionWatch` tells whether the broker let the
    client in and, if it refused, why (its log line names the settings to check).
    `clean_start=False` with `session_expiry_s` > 0 gives a persistent session (the trainer's
    at-least-once intake of drift batches).
    """
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    creds = credentials or Credentials()
    host, port = parse_address(address)
    if creds.username is not None:
        client.username_pw_set(creds.username, creds.password)
    if creds.tls is not None:
        client.tls_set_context(creds.tls.context())
    watch = ConnectionWatch(address, creds)
    watch.attach(client)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = session_expiry_s
    client.connect_async(host, port, keepalive=keepalive, clean_start=clean_start, properties=props)
    return watch


def publish_confirmed(
    client: mqtt.Client,
    watch: ConnectionWatch,
    topic: str,
    payload: bytes,
    *,
    retain: bool = False,
    timeout: float = 10.0,
) -> bool:
    """Publish at QoS 1 and wait for the broker's PUBACK: True if it took the message, False if
    no PUBACK came within `timeout`, BrokerRefusedError if its reason code says no (MQTT 5: 0x87
    Not authorized when the ACL does not let this user publish there).

    For one-shot clients (a CLI command): it sets the client's `on_publish`. A QoS 1 PUBACK
    alone says nothing: Mosquitto acknowledges a publish that its ACL dropped, with a reason.
    """
    codes: dict[int, int] = {}
    done = threading.Event()

    def on_publish(c: Any, userdata: Any, mid: int, rc: Any = 0, props: Any = None) -> None:
        codes[mid] = int(getattr(rc, "value", rc))
        done.set()

    client.on_publish = on_publish
    info = client.publish(topic, payload, qos=1, retain=retain)
    deadline = time.monotonic() + timeout
    while info.mid not in codes:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        done.wait(min(left, 0.1))
        done.clear()
    code = codes[info.mid]
    if code >= 0x80:
        name = "Not authorized" if code == 0x87 else _NAMES.get(code, f"reason 0x{code:02X}")
        raise BrokerRefusedError(
            f"broker {watch.address} refused the publish on {topic} by "
            f"{watch.credentials.describe()}: {name} (PUBACK 0x{code:02X}); "
            + (
                "this role may not publish there (see the roles and ACL table in "
                "protocol/README.md): use the credentials of the role that does"
                if code == 0x87
                else "see the broker's log"
            ),
            code,
            name,
        )
    return True


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
