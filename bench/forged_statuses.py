"""Issue 23: what 100 forged edge statuses cost the trainer's model registry.

Each forged status names a new node, says it serves the champion and lists 8 rollbacks (of the
champion and of 7 versions the trainer never made). The bench feeds them to
`ModelHistory.on_status` (what the intake's status thread calls) on a registry holding v1 and the
champion v2, and prints the records, the file's size and the time per status.

    PYTHONPATH=$PWD .venv/bin/python -m bench.forged_statuses [--statuses 100]

Run it with PYTHONPATH pointing at another checkout to compare builds (same API).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from jetson_trainer.daemon.registry_shell import ModelHistory
from jetson_trainer.versions.registry import ModelRecord
from protocol import Status


def _rollback(version: int) -> dict[str, object]:
    return {"from": version, "to": None, "reason": "forged", "ts": 1e9, "auto": True}


def run(statuses: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        history = ModelHistory(Path(tmp))
        history.file.update(
            lambda r: r.upsert(ModelRecord(1, "champion", published=1.0)).upsert(
                ModelRecord(2, "champion", parent=1, published=2.0)
            )
        )
        forged = [
            Status(
                f"forged-{i}",
                "edge",
                "online",
                "0.1.0",
                model_version=2,
                timestamp=1e9,
                detail={
                    "v": 1,
                    "rollbacks": [_rollback(2)] + [_rollback(1000 * i + k) for k in range(1, 8)],
                },
            )
            for i in range(statuses)
        ]
        start = time.perf_counter()
        for status in forged:
            history.on_status(status)
        took = time.perf_counter() - start
        path = history.file.path
        return {
            "statuses": statuses,
            "records": len(history.view().records),
            "bad_versions": len(history.bad_versions()),
            "file_bytes": path.stat().st_size,
            "ms_per_status": 1000 * took / statuses,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--statuses", type=int, default=100)
    args = parser.parse_args(argv)
    r = run(args.statuses)
    print(
        f"{r['statuses']} forged statuses: {r['records']} registry records, "
        f"{r['bad_versions']} bad versions, {r['file_bytes'] / 1024:.1f} KB, "
        f"{r['ms_per_status']:.2f} ms per status"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
