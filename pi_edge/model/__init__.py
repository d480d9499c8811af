"""A model's life on a node: vetted, stored, loaded, run, watched, rolled back.

vetting.py       the checks a bundle passes before it may run (signature, site, version,
                 compatibility, golden vectors)
state_dir.py     `ModelStore`: the last good bundle, the one before, blocked versions and
                 the rollback list (every write atomic)
lifecycle.py     `ModelManager`: owns the "edge-models" thread that vets bundles from the
                 network and the disk, stores them and hands a vetted model to the worker
                 (the swap happens on the worker, between two batches); rollbacks
classifier.py    the one place pi_edge loads a TFLite interpreter; `Classifier` feeds it
                 (owned by the worker thread, never shared)
anomaly.py       an anomaly model's score against its threshold: (healthy, `anomaly`)
anomaly_head.py  a classifier with an anomaly head: its classes and `anomaly`
vocabulary.py    a type's declared classes against its serving model's (both ways, pure)
health_watch.py  is a model just swapped in clearly worse than the one before? (pure)
evaluate.py      offline evaluation of a bundle (`pi_edge evaluate`)
config.py        this wing's settings section (`ModelConfig`) and what it builds
machine_types.py the machine types a node serves: one lane (model thread, interpreter, drift
                 watch, state dir) per type, and which lane a machine is routed to
"""
