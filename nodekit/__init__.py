"""The node kit: the plumbing every edgeloop process is built from — not the contract.

    settings.py        settings declared once: flags, env vars, file keys and checks derived
    mqtt.py            the MQTT client factory, credentials/TLS and the connection watch
    guard.py           the last-resort handler at a thread's outermost frame; thread watch
    storage.py         SQLite files that heal, and atomic file writes
    class_file.py      a machine type's class table on disk (classes.json)
    metrics_server.py  serve a node's figures on /metrics for Prometheus
    proc.py            this process's CPU share and resident memory
    cli.py             exit codes and quiet logging set-up every command shares
    errors.py          StorageError, BrokerRefusedError

`protocol` (the wire contract) imports nothing from here; every role imports both.
"""

__all__: list[str] = []
