"""The live simulator's fleet in `--realism plant`: windows from `plant.Plant`, late label events.

A `PlantFleet` is a `Fleet` (same ids, commands, sequence numbers, drift commands) whose windows
come from the realistic plant model. Plant time runs `time_scale` × the tick clock. Windows
carry no in-band label: a labeled window's label reaches the broker as a maintenance label
event (protocol.labels) covering just that window, `label_delay_s` plant seconds later (5 %
of them wrong) — pi_edge holds recent windows for late labels (`--label-hold-s`). `labels`
commands set the labeled share as in the seed mode; `fault` starts a developing fault that
holds until `repair`.

Pure like `Fleet`: time and randomness come in; `due_label_events` hands the publisher the
events to send.

>>> import numpy as np
>>> from protocol import Command
>>> from sensor_sim.plant import PlantConfig
>>> fleet = PlantFleet(FleetConfig(machines=2, label_fraction=1.0),
...                    PlantConfig(label_delay_s=(1.0, 1.0)), np.random.default_rng(0))
>>> [w.label for w in fleet.tick(0.5, timestamp_ns=10**18)]  # labels never ride in-band
[None, None]
>>> fleet.due_label_events()  # 0.5 s after the first tick: not yet
[]
>>> len(fleet.tick(1.0, timestamp_ns=10**18 + 5 * 10**8))
2
>>> sorted(e.machine for e in fleet.due_label_events())  # 1 s after the first tick
['m01', 'm02']
>>> fleet.apply(Command("fault", machines=("m02",), state="pump_fault"))
['m02']
>>> [m.state_name for m in fleet.machines]
['normal', 'pump_fault']
"""

from __future__ import annotations

import numpy as np

from protocol import CLASSES, Command, Window
from protocol.labels import LabelEvent

from .fleet import Fleet, FleetConfig
from .plant import Plant, PlantConfig

__all__ = ["LABEL_SOURCE", "FleetConfig", "PlantFleet"]

LABEL_SOURCE = "sensor_sim plant"


class PlantFleet(Fleet):
    """All machines of one realistic plant. Not thread-safe: the publisher loop owns it."""

    def __init__(self, config: FleetConfig, plant: PlantConfig, rng: np.random.Generator) -> None:
        super().__init__(config, rng)
        self.plant = Plant(plant, self.ids, rng)
        self._half_period_s = 0.05  # a label event covers [window time, + half a tick)
        self.label_events = 0

    def apply(self, cmd: Command) -> list[str]:
        """As `Fleet.apply`; a fault or repair also starts or ends the plant's episode."""
        changed = super().apply(cmd)
        if cmd.cmd in ("fault", "repair"):
            index = {mid: i for i, mid in enumerate(self.ids)}
            for mid in changed:
                i = index[mid]
                state = self._by_id[mid].state
                if cmd.cmd == "repair" or state == 0:
                    self.plant.repair(i, self.rng)
                else:
                    self.plant.force(i, state, self.rng)
        return changed

    def tick(self, dt: float, timestamp_ns: int) -> list[Window]:
        """Advance `dt` seconds (× time_scale of plant time) and return one window per machine."""
        plant = self.plant
        plant.advance(dt * plant.config.time_scale, self.rng)
        self._half_period_s = max(dt / 2.0, 1e-3)
        for i, m in enumerate(self.machines):
            m.clock += dt  # drift commands count their ramp from this clock
            m.state = int(plant.cls[i])
            m.forced = bool(plant.forced[i])
        effects = [m.drift_effect() for m in self.machines]
        blend = np.fromiter((e.blend for e in effects), dtype=np.float64, count=len(effects))
        data, _flags = plant.windows(self.rng, self.config.window_length, extra_blend=blend)
        if not all(e.is_identity for e in effects):
            gain = np.array([e.gain for e in effects], dtype=np.float32)
            offset = np.array([e.offset for e in effects], dtype=np.float32)
            data = data * gain[:, None, :] + offset[:, None, :]
        observed, delay = plant.draw_labels(self.rng, self.label_fraction)
        plant.queue_labels(observed, delay, timestamp_ns)
        return [
            Window(m.id, m.next_seq(), timestamp_ns, data[i], None)
            for i, m in enumerate(self.machines)
        ]

    def due_label_events(self) -> list[LabelEvent]:
        """The label events whose delay has passed, each covering its one window."""
        events = []
        for due in self.plant.due_labels():
            mid = self.ids[due.machine]
            start = due.window_ts_ns / 1e9
            events.append(
                LabelEvent(
                    mid, CLASSES[due.cls], start, start + self._half_period_s, source=LABEL_SOURCE
                )
            )
            self.labels_sent[mid] += 1
        self.label_events += len(events)
        return events
