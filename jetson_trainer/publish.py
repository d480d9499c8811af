"""Publish a bundle retained at QoS 1 on `<prefix>/model/current` and wait for the PUBACK."""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from protocol import Topics
from protocol.mqtt import connect, make_client

from .errors import TrainerError

__all__ = ["publish_bundle"]

log = logging.getLogger(__name__)


def publish_bundle(
    data: bytes, broker: str, *, prefix: str | None = None, timeout: float = 10.0
) -> str:
    """Send `data` retained, QoS 1; return the topic once the broker acknowledged it."""
    topics = Topics(prefix) if prefix else Topics()
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if getattr(reason, "is_failure", False):
            refused.append(str(reason))
        connected.set()

    client = make_client(f"edgeloop-trainer-publish-{uuid.uuid4().hex[:8]}")
    client.on_connect = on_connect
    try:
        connect(client, broker)
    except (ValueError, OSError) as exc:
        raise TrainerError(f"cannot connect to broker {broker}: {exc}") from exc
    client.loop_start()
    try:
        if not connected.wait(timeout) or refused:
            why = refused[0] if refused else f"no CONNACK within {timeout:.0f} s"
            raise TrainerError(
                f"broker {broker} is unreachable or refused the trainer ({why}); "
                "is mosquitto running there (`python -m scripts.broker`)?"
            )
        info = client.publish(topics.model_current, data, qos=1, retain=True)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise TrainerError(
                f"broker {broker} did not acknowledge the bundle on "
                f"{topics.model_current} within {timeout:.0f} s (rc {info.rc})"
            )
        log.info(
            "published %d bytes retained on %s via %s", len(data), topics.model_current, broker
        )
        return topics.model_current
    finally:
        client.disconnect()
        client.loop_stop()
