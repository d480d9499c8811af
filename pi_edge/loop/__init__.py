"""The closed loop on the Pi: drift, kept windows shipped to the trainer, labels, and asking.

drift.py               three drift signals, one CUSUM each: ok → suspect → drift (pure)
drift_watch.py         the serving model's drift detector, swapped with the model, shared
                       by the worker (observe), the model thread and the status thread
keeper.py              which windows to keep for the trainer, and why (pure)
kept_windows.py        keeper + durable buffer + shipper: `keep` on the worker thread
buffer.py              the durable SQLite buffer of kept windows (WAL)
shipper.py             `BatchShipper`: owns the "edge-shipper" thread and its own MQTT
                       connection; at-least-once to the trainer, deleted only on its ack
delivery.py            which batches wait for an ack and when to resend (pure)
maintenance_labels.py  label events applied to held and new windows
label_requests.py      which held windows to ask a technician to label (pure)
ask_flagged.py         an anomaly model's node asks for the labels of what it flags
class_table.py         a type's class table: declared classes, then names labels and models
                       added (an open type's new class), kept across restarts, bounded
served_batch.py        a classified batch mapped between the model's classes and the type's
accuracy_estimate.py   a label-free estimate of the serving model's accuracy (pure)
lane_loop.py           one machine type's closed loop: its labels, kept windows, estimate and
                       label requests, in its class names (one per type the node serves)
config.py              this wing's settings section (`LoopConfig`) and what it builds
"""
