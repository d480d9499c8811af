"""The secure broker profile: no anonymous client, a user per role, the ACL, TLS only.

Every check runs against a real Mosquitto started from deploy/mosquitto/edgeloop-secure.conf
(the `secure_broker` fixture), and what the ACL forbids is proven twice: with the real
`mosquitto_pub`/`mosquitto_sub` binaries, and with paho (a PUBACK "Not authorized" and a
subscriber with operator or trainer credentials that receives nothing).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nodekit.errors import BrokerRefusedError
from nodekit.mqtt import (
    CA_WAYS,
    CERT_WAYS,
    PASSWORD_WAYS,
    USER_WAYS,
    ConnectionWatch,
    Credentials,
    TLSParameters,
    connect,
    make_client,
    publish_confirmed,
)
from nodekit.settings import MqttSettings, env_names, flag_of, resolve
from protocol import Topics
from protocol.errors import ConfigError
from scripts.broker import Broker
from scripts.secure_profile import (
    ACL,
    EXAMPLE_IDENTITIES,
    ROLES,
    SECURE_CONF,
    SecureProfile,
    acl_text,
    render_conf,
    table_row,
)

REPO = Path(__file__).resolve().parent.parent


# -- helpers -----------------------------------------------------------------------------
class Client:
    """A paho client with one role's credentials that records what it receives."""

    def __init__(
        self, broker: Broker, credentials: Credentials, subscribe: tuple[str, ...] = ()
    ) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.suback: list[int] = []
        self._subscribed = threading.Event()
        self.client = make_client(f"t-{credentials.username}-{time.monotonic_ns()}")

        def on_connect(c: Any, u: Any, flags: Any, rc: Any, props: Any = None) -> None:
            if not rc.is_failure and subscribe:
                c.subscribe([(t, 1) for t in subscribe])

        def on_subscribe(c: Any, u: Any, mid: Any, codes: Any, props: Any = None) -> None:
            self.suback = [int(code.value) for code in codes]
            self._subscribed.set()

        def on_message(c: Any, u: Any, msg: Any) -> None:
            with self.lock:
                self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.link = connect(self.client, broker.address, credentials=credentials)
        self.client.loop_start()
        self.link.wait(10)
        if subscribe:
            assert self._subscribed.wait(10), "no SUBACK"

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> bool:
        return publish_confirmed(self.client, self.link, topic, payload, retain=retain, timeout=5)

    def topics_seen(self) -> list[str]:
        with self.lock:
            return [t for t, _, _ in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def clients(secure_broker: Broker, secure_profile: SecureProfile) -> Iterator[Any]:
    made: list[Client] = []

    def make(name: str, *subscribe: str, via: str | None = None) -> Client:
        """A client of identity `name`; `via`: one of its further connections' logins (two
        connections with one login take each other's session: the client id is the login)."""
        creds = secure_profile.credentials(name)
        c = Client(secure_broker, creds.for_(via) if via else creds, subscribe)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found; install it with: sudo apt-get install -y mosquitto-clients")
    return path


def _mqtt_args(broker: Broker, profile: SecureProfile, role: str | None) -> list[str]:
    args = ["-h", "127.0.0.1", "-p", str(broker.port), "--cafile", str(profile.ca_file)]
    args += ["-V", "mqttv5"]
    if role is not None:
        args += ["-u", role, "-P", profile.password(role)]
    return args


def _state_becomes(link: ConnectionWatch, state: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while link.state != state and time.monotonic() < deadline:
        time.sleep(0.05)
    return link.state == state


def _refused(credentials: Credentials, broker: Broker) -> BrokerRefusedError:
    client = make_client(f"refused-{time.monotonic_ns()}")
    link = connect(client, broker.address, credentials=credentials)
    client.loop_start()
    try:
        with pytest.raises(BrokerRefusedError) as info:
            link.wait(10)
        return info.value
    finally:
        client.disconnect()
        client.loop_stop()


# -- who may connect -----------------------------------------------------------------------
@pytest.mark.broker
def test_anonymous_clients_are_refused_by_paho_and_by_mosquitto_pub(
    secure_broker: Broker, secure_profile: SecureProfile, topics: Topics
) -> None:
    err = _refused(Credentials(tls=TLSParameters(secure_profile.ca_file)), secure_broker)
    assert err.code == 0x87 and "Not authorized (CONNACK 0x87)" in str(err)
    assert USER_WAYS in str(err) and PASSWORD_WAYS in str(err)  # what to check, by name

    done = subprocess.run(
        [
            _tool("mosquitto_pub"),
            *_mqtt_args(secure_broker, secure_profile, None),
            "-t",
            topics.window("m01"),
            "-m",
            "x",
            "-q",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode != 0
    assert "not authori" in (done.stdout + done.stderr).lower()


@pytest.mark.broker
def test_a_wrong_password_is_refused_with_the_reason_code_and_the_settings_to_check(
    secure_broker: Broker, secure_profile: SecureProfile
) -> None:
    creds = Credentials("sensor", "not-the-password", TLSParameters(secure_profile.ca_file))
    err = _refused(creds, secure_broker)
    assert err.code == 0x87  # Mosquitto 2.0 answers a wrong password with "Not authorized"
    assert "user 'sensor'" in str(err) and "not-the-password" not in str(err)
    assert "password file" in str(err)


@pytest.mark.broker
def test_there_is_no_plaintext_listener_and_a_plain_client_is_told_to_use_tls(
    secure_broker: Broker, secure_profile: SecureProfile
) -> None:
    assert "\nlistener " in secure_broker.conf_path.read_text()
    assert secure_broker.conf_path.read_text().count("\nlistener ") == 1
    client = make_client(f"plain-{time.monotonic_ns()}")
    link = connect(
        client,
        secure_broker.address,
        credentials=Credentials("edge", secure_profile.password("edge")),  # no TLS
    )
    client.loop_start()
    try:
        assert _state_becomes(link, "closed before CONNACK") and not link.connected
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.broker
def test_a_broker_certificate_from_another_ca_is_refused_as_a_tls_failure(
    secure_broker: Broker, secure_profile: SecureProfile, tmp_path: Path
) -> None:
    from scripts.secure_profile import make_profile

    other = make_profile(tmp_path / "other")  # a CA the broker's certificate is not from
    creds = Credentials("edge", secure_profile.password("edge"), TLSParameters(other.ca_file))
    err = _refused(creds, secure_broker)
    assert err.code is None and err.reason.startswith("TLS")
    assert "certificate" in str(err) and CA_WAYS in str(err)


@pytest.mark.broker
def test_client_certificates_work_when_the_broker_requires_them(
    secure_profile: SecureProfile, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Broker(run_dir=tmp_path, profile=secure_profile, require_certificate=True) as broker:
        assert "require_certificate true" in broker.conf_path.read_text()
        client = make_client(f"no-cert-{time.monotonic_ns()}")
        link = connect(client, broker.address, credentials=secure_profile.credentials("edge"))
        client.loop_start()
        try:  # TLS 1.3: the broker hangs up after the handshake, before any CONNACK
            assert _state_becomes(link, "closed before CONNACK")
        finally:
            client.disconnect()
            client.loop_stop()
        assert CERT_WAYS in caplog.text
        good = Client(broker, secure_profile.credentials("edge", client_cert=True))
        assert good.link.connected
        good.close()


# -- the ACL: what each role may publish -----------------------------------------------------
@pytest.mark.broker
def test_sensor_credentials_cannot_publish_model_control_labels_or_batches_mosquitto_tools(
    secure_broker: Broker, secure_profile: SecureProfile, topics: Topics
) -> None:
    """Independent of edgeloop's code: the real mosquitto_pub and mosquitto_sub binaries."""
    sub = subprocess.Popen(  # stdbuf: line-buffered, so its SUBACK line arrives at once
        [
            _tool("stdbuf"),
            "-oL",
            _tool("mosquitto_sub"),
            *_mqtt_args(secure_broker, secure_profile, "operator"),
            "-t",
            f"{topics.prefix}/#",
            "-v",
            "-d",
            "-C",
            "1",
            "-W",
            "20",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines: list[str] = []
        assert sub.stdout is not None
        for line in sub.stdout:  # wait for its SUBACK before publishing
            lines.append(line)
            if "SUBACK" in line:
                break
        forbidden = [
            (topics.model_current, "-r"),
            (topics.sim_control, None),
            (f"{topics.prefix}/labels", None),
            (topics.drift_batches("sensor"), None),  # even on its own name: a sensor ships none
            (topics.legacy_drift_batches, None),
        ]
        for topic, flag in forbidden:
            done = subprocess.run(
                [
                    _tool("mosquitto_pub"),
                    *_mqtt_args(secure_broker, secure_profile, "sensor"),
                    "-t",
                    topic,
                    "-m",
                    "forged",
                    "-q",
                    "1",
                    *([flag] if flag else []),
                ],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
            assert "not authori" in (done.stdout + done.stderr).lower(), (topic, done)
        allowed = topics.window("m01")  # the one thing a sensor may publish
        subprocess.run(
            [
                _tool("mosquitto_pub"),
                *_mqtt_args(secure_broker, secure_profile, "sensor"),
                "-t",
                allowed,
                "-m",
                "a window",
                "-q",
                "1",
            ],
            check=True,
            timeout=20,
        )
        out, _ = sub.communicate(timeout=25)
        received = [
            line for line in lines + out.splitlines() if line.startswith(topics.prefix + "/")
        ]
        assert received == [f"{allowed} a window"]  # the first message (-C 1) was the window
    finally:
        if sub.poll() is None:
            sub.kill()
    late = subprocess.run(  # nothing forged was retained either
        [
            _tool("mosquitto_sub"),
            *_mqtt_args(secure_broker, secure_profile, "operator"),
            "-t",
            topics.model_current,
            "-W",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert late.stdout == ""


@pytest.mark.broker
def test_sensor_publishes_outside_its_acl_get_puback_not_authorized_and_reach_nobody(
    clients: Any, topics: Topics
) -> None:
    operator = clients("operator", f"{topics.prefix}/#")
    trainer = clients("trainer", topics.all_drift_batches(), topics.statuses())
    sensor = clients("sensor")
    for topic in (
        topics.model_current,
        topics.sim_control,
        f"{topics.prefix}/labels",
        topics.drift_batches("sensor"),
        topics.legacy_drift_batches,
        topics.prediction("m01"),
    ):
        with pytest.raises(BrokerRefusedError) as info:
            sensor.publish(topic, b"forged", retain=topic == topics.model_current)
        assert info.value.code == 0x87 and "PUBACK 0x87" in str(info.value)
        assert "protocol/README.md" in str(info.value)
    assert sensor.publish(topics.window("m01"), b"a window")  # allowed: the control case
    deadline = time.monotonic() + 5
    while not operator.topics_seen() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    assert operator.topics_seen() == [topics.window("m01")]
    assert trainer.topics_seen() == []


@pytest.mark.broker
def test_an_edge_node_cannot_publish_the_model_only_the_trainer_can(
    clients: Any, topics: Topics
) -> None:
    edge = clients("edge")
    with pytest.raises(BrokerRefusedError) as info:
        edge.publish(topics.model_current, b"not a model", retain=True)
    assert info.value.code == 0x87
    trainer = clients("trainer")
    assert trainer.publish(topics.model_current, b"the model", retain=True)
    late = clients("edge", topics.model_current)  # an edge node reads the retained model
    deadline = time.monotonic() + 5
    while not late.messages and time.monotonic() < deadline:
        time.sleep(0.02)
    assert late.messages == [(topics.model_current, b"the model", True)]
    assert trainer.publish(topics.model_current, b"", retain=True)  # clear it


@pytest.mark.broker
def test_the_operator_can_send_control_and_labels_which_the_sensor_receives(
    clients: Any, topics: Topics
) -> None:
    sensor = clients("sensor", topics.sim_control)
    operator = clients("operator")
    assert operator.publish(topics.sim_control, b'{"v":1,"cmd":"repair"}')
    assert operator.publish(f"{topics.prefix}/labels", b"{}")
    deadline = time.monotonic() + 5
    while not sensor.messages and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sensor.topics_seen() == [topics.sim_control]


@pytest.mark.broker
def test_edge_reads_windows_through_a_shared_subscription_and_not_the_trainers_batches(
    clients: Any, topics: Topics
) -> None:
    edge = clients("edge", topics.windows(shared_group="pis"), topics.all_drift_batches())
    assert edge.suback[0] < 0x80  # granted
    sensor = clients("sensor")
    edge_pub = clients("edge", via="batches")
    assert edge_pub.publish(topics.drift_batches("edge"), b"batch")  # its shipper ships its own
    for topic in (topics.drift_batches("pi-9"), topics.legacy_drift_batches):  # no one else's
        with pytest.raises(BrokerRefusedError) as info:
            edge_pub.publish(topic, b"forged batch")
        assert info.value.code == 0x87
    assert sensor.publish(topics.window("m07"), b"w")
    deadline = time.monotonic() + 5
    while not edge.messages and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    assert edge.topics_seen() == [topics.window("m07")]  # no batch: edge may not read them


def test_a_fleet_edge_node_hears_the_other_nodes_statuses_and_a_sensor_does_not(
    clients: Any, topics: Topics
) -> None:
    """`pi_edge run --fleet` learns its group's members from `…/nodes/+/status`."""
    edge = clients("edge", topics.statuses())
    sensor = clients("sensor", topics.statuses())
    other = clients("trainer")
    assert other.publish(topics.status("trainer"), b"{}")  # its own status: the only one
    deadline = time.monotonic() + 5
    while not edge.messages and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    assert edge.topics_seen() == [topics.status("trainer")]
    assert sensor.topics_seen() == []  # the ACL is what lets edge read them


# -- the edgeloop CLIs with each role's credentials ------------------------------------------
@pytest.mark.broker
def test_control_cli_works_with_operator_credentials_and_fails_clearly_with_a_sensors(
    secure_broker: Broker,
    secure_profile: SecureProfile,
    topics: Topics,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from sensor_sim.__main__ import main

    base = ["repair", "--broker", secure_broker.address, "--prefix", topics.prefix]
    for var, value in secure_profile.env("operator").items():
        monkeypatch.setenv(var, value)
    assert main(base) == 0
    for var, value in secure_profile.env("sensor").items():
        monkeypatch.setenv(var, value)
    assert main(base) == 1  # a sensor identity has no login for one-shot commands at all
    assert "refused user 'sensor~cli'" in caplog.text
    assert "Not authorized (CONNACK 0x87)" in caplog.text
    monkeypatch.setenv("EDGELOOP_MQTT_LOGIN_PER_CONNECTION", "false")  # its own login: the ACL
    assert main(base) == 1
    assert "Not authorized (PUBACK 0x87)" in caplog.text


@pytest.mark.broker
def test_pi_edge_run_exits_1_naming_the_settings_when_the_broker_refuses_its_password(
    secure_broker: Broker,
    secure_profile: SecureProfile,
    topics: Topics,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from pi_edge.__main__ import main

    monkeypatch.setenv("EDGELOOP_MQTT_PASSWORD", "wrong")
    started = time.monotonic()
    rc = main(
        [
            "run",
            "--broker",
            secure_broker.address,
            "--prefix",
            topics.prefix,
            "--mqtt-user",
            "edge",
            "--mqtt-ca-file",
            str(secure_profile.ca_file),
            "--insecure-dev",
            "--no-dashboard",
            "--state-dir",
            str(tmp_path / "state"),
        ]
    )
    assert rc == 1
    assert time.monotonic() - started < 30  # gave up after a few refusals, not never
    assert "Not authorized (CONNACK 0x87)" in caplog.text
    assert "--mqtt-password-file" in caplog.text and "wrong" not in caplog.text.replace(
        "wrong", "", 0
    )


# -- settings and files (no broker) ----------------------------------------------------------
def test_the_credential_settings_are_the_flags_and_variables_the_messages_name() -> None:
    envs = env_names(MqttSettings)
    for ways in (USER_WAYS, PASSWORD_WAYS, CA_WAYS, CERT_WAYS):
        for name in re.findall(r"--[a-z-]+|EDGELOOP_[A-Z_]+", ways):
            assert name in envs or name in {
                flag_of(MqttSettings, f) for f in envs.values() if f != "mqtt_password"
            }, name
    assert "EDGELOOP_MQTT_PASSWORD" in envs


def test_the_password_has_no_flag_and_never_shows_in_a_repr(tmp_path: Path) -> None:
    import argparse

    from nodekit.settings import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser, MqttSettings)
    assert "--mqtt-password" not in parser.format_help().replace("--mqtt-password-file", "")
    settings = resolve(
        MqttSettings, env={"EDGELOOP_MQTT_USER": "u", "EDGELOOP_MQTT_PASSWORD": "s3"}
    )
    creds = settings.credentials()
    assert creds.password == "s3"
    assert "s3" not in repr(settings) and "s3" not in repr(creds)


def test_password_file_is_read_and_a_second_password_source_is_refused(tmp_path: Path) -> None:
    pw = tmp_path / "edge.password"
    pw.write_text("from-the-file\n")
    pw.chmod(0o600)
    env = {"EDGELOOP_MQTT_USER": "edge", "EDGELOOP_MQTT_PASSWORD_FILE": str(pw)}
    assert resolve(MqttSettings, env=env).credentials().password == "from-the-file"
    both = resolve(MqttSettings, env={**env, "EDGELOOP_MQTT_PASSWORD": "other"})
    with pytest.raises(ConfigError, match="set twice"):
        both.credentials()
    pw.write_text("\n")
    with pytest.raises(ConfigError, match="no password"):
        resolve(MqttSettings, env=env).credentials()
    with pytest.raises(ConfigError, match="not a readable file"):
        resolve(MqttSettings, env={**env, "EDGELOOP_MQTT_PASSWORD_FILE": str(tmp_path / "no")})
    with pytest.raises(ConfigError, match="needs its key"):
        resolve(MqttSettings, env={"EDGELOOP_MQTT_CERT_FILE": str(pw)}).credentials()


def test_every_role_takes_the_credential_settings() -> None:
    from jetson_trainer.config import PublishConfig, ServeConfig
    from pi_edge.config import EdgeConfig
    from sensor_sim.config import Connection, SimConfig

    for cls in (EdgeConfig, SimConfig, Connection, ServeConfig, PublishConfig):
        assert set(env_names(MqttSettings)) <= set(env_names(cls)), cls


def test_refusals_are_given_up_on_only_when_retrying_cannot_help() -> None:
    w = ConnectionWatch("hub:8883", Credentials("edge", "x"), give_up_after=2)
    for _ in range(5):
        w.note_connack(0x89)  # server busy: retry
        w.note_socket_error(ConnectionRefusedError(111, "Connection refused"))
    assert w.failure() is None and w.state.startswith("unreachable")
    w.note_connack(0x87)
    w.note_connack(0x87)
    failure = w.failure()
    assert failure is not None and failure.code == 0x87


def test_the_committed_acl_and_the_readme_table_are_the_acl_table() -> None:
    assert (REPO / "deploy" / "mosquitto" / "acl").read_text() == acl_text(EXAMPLE_IDENTITIES)
    readme = (REPO / "protocol" / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| every login |")]
    rows += [line for line in readme.splitlines() if line.split(" | ")[0][2:] in ROLES]
    assert rows == [table_row(grant) for grant in ACL]  # every row, in order, nothing else
    assert set(ROLES) | {"*"} == {g.role for g in ACL}


def test_the_broker_config_renders_only_options_it_has() -> None:
    from scripts.secure_profile import ProfileError

    template = SECURE_CONF.read_text()
    assert "allow_anonymous false" in template and "max_packet_size" in template
    with pytest.raises(ProfileError):
        render_conf(template, {"no_such_option": "1"})


def test_client_ids_are_bound_to_logins_on_the_listener() -> None:
    """`use_username_as_clientid` is a per-listener option in Mosquitto 2.0: before the
    `listener` line it would bind nothing on the TLS listener."""
    lines = [line.split(None, 1)[0] for line in SECURE_CONF.read_text().splitlines() if line]
    listener = lines.index("listener")
    assert lines.index("use_username_as_clientid") > listener
    assert "check_retain_source" not in lines  # off: it would withhold a bridge's retained model
