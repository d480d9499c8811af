"""Reading a status's detail: each typed part on demand, never an exception.

Whoever acts on another node's status (the trainer's registry and staged rollout, a fleet
member, the console, the benches) reads its detail through `DetailReader`, on paho's thread or
the UI's: a part that is absent, malformed, or of a detail whose `v` this build does not know
reads as None, and the reader is told (`on_bad`) so that it counts it.

>>> from protocol.status_detail import FleetDetail, ModelHealthDetail, RecentMachines, RolloutGroup
>>> bad = []
>>> d = DetailReader({"v": 1, "rollout_group": "canary", "fleet": {"group": 3}}, "edge",
...                  on_bad=bad.append)
>>> d.get(RolloutGroup), d.get(FleetDetail), d.get(ModelHealthDetail), [e.kind for e in bad]
(RolloutGroup(group='canary'), None, None, ['bad_field'])
>>> DetailReader({"v": 3, "rollout_group": "canary"}, "edge", bad.append).get(RolloutGroup)
>>> bad[-1].kind
'bad_version'
>>> DetailReader({"machines": {"m01": {"state": "normal", "drift": "off", "labels": 0}}},
...              "edge").get(RecentMachines) is None  # a simulator's shape on an edge node
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..errors import PayloadError
from ._base import Part, detail_version
from .edge_model import Rollback, Rollbacks

__all__ = ["DetailReader"]

P = TypeVar("P", bound=Part)

_EMPTY: Mapping[str, Any] = {}


class DetailReader:
    """The typed parts of one node's `detail` (`role`: the status's role); never raises.

    The detail's version is checked once, here; `get` and `rollbacks` then read one part each
    time they are called (a status carries more than any one reader wants).
    """

    __slots__ = ("_detail", "_on_bad", "role", "version")

    def __init__(
        self,
        detail: object,
        role: str,
        on_bad: Callable[[PayloadError], object] | None = None,
    ) -> None:
        self.role = role
        self._on_bad = on_bad
        self._detail: Mapping[str, Any] = _EMPTY
        self.version: int | None = None  # None: refused whole
        try:
            self.version = detail_version(detail)
        except PayloadError as exc:
            self._refused(exc)
        else:
            assert isinstance(detail, Mapping)
            self._detail = detail

    def get(self, part: type[P]) -> P | None:
        """`detail[part.KEY]` typed; None when absent, malformed (told to `on_bad`), of
        another role's part, or in a refused detail."""
        if self.role != part.ROLE or part.KEY not in self._detail:
            return None
        try:
            return part.from_obj(self._detail[part.KEY])
        except PayloadError as exc:
            self._refused(exc)
            return None

    def rollbacks(self) -> tuple[tuple[Rollback, ...], int]:
        """The well-formed entries of an edge node's `detail.rollbacks` (of its newest
        `MAX_ROLLBACKS`), and how many entries were not (each also told to `on_bad`); one for
        a `rollbacks` that is not a list.

        A trainer acts on every good entry even when a neighbour is malformed: one bad entry
        must not hide a rollback (protocol/README.md, "Status").
        """
        if self.role != Rollbacks.ROLE or Rollbacks.KEY not in self._detail:
            return (), 0
        good, bad = Rollbacks.lenient(self._detail[Rollbacks.KEY])
        for exc in bad:
            self._refused(exc)
        return good, len(bad)

    def _refused(self, exc: PayloadError) -> None:
        if self._on_bad is not None:
            self._on_bad(exc)
