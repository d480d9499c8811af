"""What a node tells the world besides predictions, and how it shows itself.

outputs.py          a classified micro-batch → prediction payloads and history rows (pure)
debounce.py         each machine's debounced state and its changes (events) (pure)
telemetry.py        the node's figures (rates, latencies, errors) → status and snapshot
running_stats.py    sliding-window rates, latency percentiles, counters (pure)
history_store.py    the local prediction history in SQLite
history_writer.py   `HistoryRecorder`: owns the "edge-history" thread that writes it
home_assistant.py   Home Assistant MQTT discovery configs (paho's and the worker's threads)
sparkplug.py        `SparkplugNode`: owns the "edge-sparkplug" thread and its own MQTT
                    connection (`--sparkplug GROUP`)
prometheus.py       the node's figures as Prometheus metric families (read at scrape time)
dashboard.py        the terminal view: a pure function from a snapshot to a renderable
config.py           this wing's settings section (`ReportConfig`) and what it builds
"""
