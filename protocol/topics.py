"""Every MQTT topic edgeloop uses, built under one configurable prefix.

>>> t = Topics("edgeloop/v1")
>>> t.window("m01")
'edgeloop/v1/machines/m01/window'
>>> t.machine_of(t.prediction("m07"))
'm07'
>>> t.windows(shared_group="pis")
'$share/pis/edgeloop/v1/machines/+/window'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import PayloadError

DEFAULT_PREFIX = "edgeloop/v1"
DEFAULT_TYPE_NAME = "default"  # the built-in machine type (protocol.machine_type)
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")  # always fullmatch: "$" lets a "\n" in


def check_id(value: str, what: str = "machine id") -> str:
    """Return `value` if it is a valid machine/node id (1-64 of A-Z a-z 0-9 _ . -).

    >>> check_id("m01")
    'm01'
    >>> try:
    ...     check_id("m01\\n")
    ... except PayloadError as exc:
    ...     print(exc.kind)
    bad_id
    """
    if not isinstance(value, str) or not _ID.fullmatch(value):
        shown = repr(value[:80]) if isinstance(value, str) else f"of type {type(value).__name__}"
        raise PayloadError(
            f"{what} {shown} is invalid; use 1-64 characters from A-Z a-z 0-9 _ . - "
            "(no '/', '+' or '#', which are MQTT wildcards)",
            kind="bad_id",
        )
    return value


def _node_under(topic: str, shared: str) -> str | None:
    """The node of a per-node topic `{shared}/{node}`; "" for `shared` itself; else None."""
    if topic == shared:
        return ""
    node = topic[len(shared) + 1 :] if topic.startswith(shared + "/") else ""
    return node if _ID.fullmatch(node) else None


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic builders; `prefix` lets several edgeloop installs share one broker."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix or self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise ValueError(f"topic prefix {self.prefix!r} must be non-empty without edge '/'")
        if any(c in self.prefix for c in "+#"):
            raise ValueError(f"topic prefix {self.prefix!r} must not contain '+' or '#'")

    def window(self, machine: str) -> str:
        return f"{self.prefix}/machines/{check_id(machine)}/window"

    def prediction(self, machine: str) -> str:
        return f"{self.prefix}/machines/{check_id(machine)}/prediction"

    def machine_state(self, machine: str, node: str) -> str:
        """Where pi_edge `node` keeps `machine`'s debounced state, retained
        (protocol.machine_state): under the node's own last level, so the broker's ACL lets only
        that node retain it and a reader knows who said it (the payload's node must match).

        >>> Topics("site").machine_state("m01", "pi-1")
        'site/machines/m01/state/pi-1'
        """
        return f"{self.prefix}/machines/{check_id(machine)}/state/{check_id(node, 'node id')}"

    def machine_states(self) -> str:
        """Subscription filter for every machine's state, as every node keeps it."""
        return f"{self.prefix}/machines/+/state/+"

    def legacy_machine_state(self, machine: str) -> str:
        """The state topic of nodes before per-node state topics (a reader may still take
        what is retained there; the secure profile lets no one write it)."""
        return f"{self.prefix}/machines/{check_id(machine)}/state"

    def state_source(self, topic: str) -> tuple[str, str] | None:
        """(machine, node) of a machine state topic under this prefix, node "" for the legacy
        topic; None for any other topic.

        >>> t = Topics("site")
        >>> t.state_source(t.machine_state("m01", "pi-1")), t.state_source("site/machines/m/state")
        (('m01', 'pi-1'), ('m', ''))
        """
        head = f"{self.prefix}/machines/"
        if not topic.startswith(head):
            return None
        rest = topic[len(head) :].split("/")
        if len(rest) not in (2, 3) or rest[1] != "state" or not _ID.fullmatch(rest[0]):
            return None
        node = rest[2] if len(rest) == 3 else ""
        return (rest[0], node) if not node or _ID.fullmatch(node) else None

    def machine_event(self, machine: str) -> str:
        """Where pi_edge publishes each change of `machine`'s debounced state (not retained).

        >>> Topics("site").machine_event("m01")
        'site/machines/m01/event'
        """
        return f"{self.prefix}/machines/{check_id(machine)}/event"

    def status(self, node: str) -> str:
        return f"{self.prefix}/nodes/{check_id(node, 'node id')}/status"

    def node_command(self, node: str) -> str:
        """Where an operator sends `node` a command (protocol.node_command), QoS 1.

        >>> Topics("site").node_command("pi-1")
        'site/nodes/pi-1/command'
        """
        return f"{self.prefix}/nodes/{check_id(node, 'node id')}/command"

    def drift_batches(self, node: str) -> str:
        """Where `node` ships its drift batches (protocol.drift_batch), QoS 1: its own topic, so
        the broker's ACL lets a node write only its own and the trainer knows the sender from
        the topic (the payload's node must match).

        >>> Topics("site").drift_batches("pi-1")
        'site/drift/batches/pi-1'
        """
        return f"{self.prefix}/drift/batches/{check_id(node, 'node id')}"

    def all_drift_batches(self) -> str:
        """Subscription filter for every node's drift batches (the trainer's intake)."""
        return f"{self.prefix}/drift/batches/+"

    @property
    def legacy_drift_batches(self) -> str:
        """The one shared batch topic of nodes before per-node batch topics (protocol/README.md,
        "Drift batch"): a trainer still reads it on an open broker; the secure ACL grants no one
        to write it, as the sender there is only what the payload says."""
        return f"{self.prefix}/drift/batches"

    def node_of_drift_batches(self, topic: str) -> str | None:
        """The node a drift batch topic belongs to; "" for the legacy shared topic; None for a
        topic that is not a batch topic under this prefix.

        >>> t = Topics("site")
        >>> [t.node_of_drift_batches(x) for x in (t.drift_batches("pi-1"), "site/drift/batches")]
        ['pi-1', '']
        >>> t.node_of_drift_batches("site/drift/batches/a/b") is None
        True
        """
        return _node_under(topic, self.legacy_drift_batches)

    def drift_acks(self, node: str) -> str:
        """Where the trainer acknowledges `node`'s stored drift batches (protocol.batch_ack).

        >>> Topics("site").drift_acks("pi-1")
        'site/drift/acks/pi-1'
        """
        return f"{self.prefix}/drift/acks/{check_id(node, 'node id')}"

    @property
    def labels(self) -> str:
        """Where maintenance label events go (protocol.labels), QoS 1, not retained.

        >>> Topics("site").labels
        'site/labels'
        """
        return f"{self.prefix}/labels"

    def label_requests(self, node: str) -> str:
        """Where pi_edge `node` asks for the labels that would help it most
        (protocol.label_request), QoS 1, not retained: its own topic, so the asker is who the
        broker let write it (the payload's node must match).

        >>> Topics("site").label_requests("pi-1")
        'site/labels/requests/pi-1'
        """
        return f"{self.prefix}/labels/requests/{check_id(node, 'node id')}"

    def all_label_requests(self) -> str:
        """Subscription filter for every node's label requests."""
        return f"{self.prefix}/labels/requests/+"

    @property
    def legacy_label_requests(self) -> str:
        """The one shared topic of nodes before per-node label requests (read, never written)."""
        return f"{self.prefix}/labels/requests"

    def node_of_label_requests(self, topic: str) -> str | None:
        """The node a label-request topic belongs to; "" for the legacy shared topic; None for
        any other topic.

        >>> t = Topics("site")
        >>> [t.node_of_label_requests(x) for x in (t.label_requests("p"), "site/labels/requests")]
        ['p', '']
        """
        return _node_under(topic, self.legacy_label_requests)

    @property
    def model_current(self) -> str:
        return f"{self.prefix}/model/current"

    def model_of(self, machine_type: str) -> str:
        """Where the trainer keeps a machine type's current model, retained: the built-in type
        `default` on `model/current` (as before machine types), every other type on its own.

        >>> t = Topics("site")
        >>> t.model_of("default"), t.model_of("fan")
        ('site/model/current', 'site/types/fan/model/current')
        """
        if machine_type == DEFAULT_TYPE_NAME:
            return self.model_current
        return f"{self.prefix}/types/{check_id(machine_type, 'machine type')}/model/current"

    def model_group_of(self, machine_type: str, group: str) -> str:
        """A rollout group's offers of a machine type's models (`model_group` for `default`).

        >>> Topics("site").model_group_of("fan", "canary")
        'site/types/fan/model/groups/canary'
        """
        if machine_type == DEFAULT_TYPE_NAME:
            return self.model_group(group)
        kind = check_id(machine_type, "machine type")
        return f"{self.prefix}/types/{kind}/model/groups/{check_id(group, 'rollout group')}"

    def type_models(self) -> str:
        """Subscription filter for every other machine type's current model."""
        return f"{self.prefix}/types/+/model/current"

    def type_group_models(self, group: str) -> str:
        """Subscription filter for a rollout group's offers of every other type's models."""
        return f"{self.prefix}/types/+/model/groups/{check_id(group, 'rollout group')}"

    def type_of_model_topic(self, topic: str) -> str | None:
        """The machine type a model topic is for ("default" for model/current and model/groups),
        None for a topic that is not a model topic under this prefix.

        >>> t = Topics("site")
        >>> [t.type_of_model_topic(x) for x in (t.model_current, t.model_of("fan"), "site/x")]
        ['default', 'fan', None]
        """
        head = f"{self.prefix}/"
        if not topic.startswith(head):
            return None
        rest = topic[len(head) :].split("/")
        if rest == ["model", "current"] or (len(rest) == 3 and rest[:2] == ["model", "groups"]):
            return DEFAULT_TYPE_NAME
        if len(rest) >= 4 and rest[0] == "types" and rest[2] == "model":
            tail = rest[3:]
            if tail == ["current"] or (len(tail) == 2 and tail[0] == "groups"):
                return rest[1]
        return None

    def model_group(self, group: str) -> str:
        """Where the trainer offers a rollout `group` (canary nodes) a new model first: the
        same signed bundle as `model_current`, retained, QoS 1 (protocol/README.md, "Staged
        rollout").

        >>> Topics("site").model_group("canary")
        'site/model/groups/canary'
        >>> Topics("site").model_group("line/1")
        Traceback (most recent call last):
        ...
        protocol.errors.PayloadError: rollout group 'line/1' is invalid; ...
        """
        return f"{self.prefix}/model/groups/{check_id(group, 'rollout group')}"

    @property
    def key_log(self) -> str:
        """Where the trainer keeps its key log (protocol.keys: the last key-rotation records),
        retained, QoS 1; every pi_edge node subscribes before the model topics.

        >>> Topics("site").key_log
        'site/keys/log'
        """
        return f"{self.prefix}/keys/log"

    @property
    def sim_control(self) -> str:
        return f"{self.prefix}/sim/control"

    def windows(self, machine: str = "+", shared_group: str | None = None) -> str:
        """Subscription filter for windows of one machine or all (`+`), optionally shared."""
        machine_part = machine if machine == "+" else check_id(machine)
        topic = f"{self.prefix}/machines/{machine_part}/window"
        return f"$share/{check_id(shared_group, 'group')}/{topic}" if shared_group else topic

    def predictions(self) -> str:
        return f"{self.prefix}/machines/+/prediction"

    def statuses(self) -> str:
        return f"{self.prefix}/nodes/+/status"

    def machine_of(self, topic: str) -> str | None:
        """Machine id from a `.../machines/{id}/...` topic under this prefix, else None."""
        head = f"{self.prefix}/machines/"
        if not topic.startswith(head):
            return None
        rest = topic[len(head) :].split("/")
        return rest[0] if len(rest) == 2 and _ID.fullmatch(rest[0]) else None
