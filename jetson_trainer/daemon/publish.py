"""Publish a bundle retained at QoS 1 on its machine type's model topic (`<prefix>/model/current`
for the built-in type, `<prefix>/types/<type>/model/current` for another) and wait for the
PUBACK."""

from __future__ import annotations

import logging
import uuid

from nodekit.mqtt import Credentials, connect, make_client, publish_confirmed, start_loop
from protocol import Topics

from ..errors import TrainerError

__all__ = ["publish_bundle", "publish_message"]

log = logging.getLogger(__name__)


def publish_bundle(
    data: bytes,
    broker: str,
    *,
    prefix: str | None = None,
    timeout: float = 10.0,
    credentials: Credentials | None = None,
    machine_type: str = "default",
) -> str:
    """Send `data` retained, QoS 1, on `machine_type`'s model topic; return the topic once the
    broker acknowledged it.

    BrokerRefusedError (exit 1) if the broker refuses the login, or its PUBACK says this user
    may not publish the model (in the secure profile only the trainer's credentials may).
    """
    topics = Topics(prefix) if prefix else Topics()
    topic = topics.model_of(machine_type)
    publish_message(
        data, broker, topic, "bundle", retain=True, timeout=timeout, credentials=credentials
    )
    return topic


def publish_message(
    data: bytes,
    broker: str,
    topic: str,
    what: str,
    *,
    retain: bool = False,
    timeout: float = 10.0,
    credentials: Credentials | None = None,
) -> None:
    """Send `data` on `topic` at QoS 1 and return once the broker acknowledged it (`what`
    names it in errors); BrokerRefusedError if the login or the ACL says no."""
    client = make_client(f"edgeloop-trainer-publish-{uuid.uuid4().hex[:8]}")
    try:
        link = connect(client, broker, credentials=credentials)
    except (ValueError, OSError) as exc:
        raise TrainerError(f"cannot connect to broker {broker}: {exc}") from exc
    start_loop(client)
    try:
        link.wait(timeout)  # BrokerRefusedError says why: unreachable, login or TLS
        if not publish_confirmed(client, link, topic, data, retain=retain, timeout=timeout):
            raise TrainerError(
                f"broker {broker} did not acknowledge the {what} on {topic} within {timeout:.0f} s"
            )
        log.info(
            "published %d bytes%s on %s via %s",
            len(data),
            " retained" if retain else "",
            topic,
            broker,
        )
    finally:
        client.disconnect()
        client.loop_stop()
