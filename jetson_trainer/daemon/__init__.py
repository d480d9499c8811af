"""`serve`: the trainer daemon that closes the loop, and the threads it owns.

serve.py            `TrainerDaemon`: composes the parts; owns the "trainer-policy" thread
                    (`start_policy`: fine-tune, gate, sign, publish) and the watchdog
intake.py           `Intake`: owns the "trainer-intake" thread and the persistent MQTT
                    session; stores drift batches before acknowledging them
senders.py          whose statuses count: a node's own topic, the role it was first heard with
store.py            the durable window store (SQLite), every record once
finetune_policy.py  when to fine-tune (pure)
retrain.py          one fine-tune attempt: challenger, scores, gate, bundle
class_table.py      the classes the store's labels index: the type's, then names batches
                    added (an open type); each batch's labels translated by name
growth.py           a cold start: labels of a class the champion lacks grow its class list
replay.py           which original windows a fine-tune replays (pure)
selftrain.py        which unlabeled drift windows a fine-tune may learn from (pure)
reference.py        the drift detector's reference for the model the Pis run
champion.py         the newest verified bundle on disk, else one trained from the data
registry_shell.py   the daemon's side of the model registry (versions/registry.py)
rollout_shell.py    publishes to canary groups and promotes (versions/rollout.py decides)
publish.py          publish a bundle retained and wait for the PUBACK (also `publish`)
prometheus.py       the daemon's figures as Prometheus metric families
dashboard.py        the terminal view (pure)
"""
