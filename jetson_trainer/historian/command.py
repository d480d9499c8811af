"""`python -m jetson_trainer import`: historian files in, a data set `train` reads out.

The I/O shell around the historian package's pure modules: it opens the CSV and Parquet files, hands
their rows to the pure core, and writes what comes back into the seed 000 layout of
`jetson_trainer.build.data`:

    OUT/train_data.npy, train_labels.npy      labeled windows (N, T, C) float32 / (N,) int64
    OUT/infer_data.npy, infer_labels.npy      the held-out last part in time (if --holdout > 0)
    OUT/unlabeled_data.npy                    windows no label reached (no labels file, so
                                              `train`, `evaluate` and `serve` never read them)
    OUT/windows.csv                           split, row, machine, start (UTC), label per window
    OUT/import_report.json                    coverage, gaps, windows per class, refusals
    OUT/classes.json                          the machine type (`train` reads it)

The machine type (`--site-file FILE --machine-type NAME`, else the built-in one) gives the
channels the historian's are mapped onto, the class names of the maintenance log, the healthy
class of `--unlabeled-normal` and the window length (unless --window-length says).

Parquet needs `pyarrow` (in the trainer extra); CSV is read with the standard library. No
TensorFlow is imported here.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from protocol.errors import ConfigError
from protocol.machine_type import DEFAULT_TYPE, MachineType

from ..config import ImportConfig
from .collect import UNREADABLE, Collector
from .dataset import DataSet, build_dataset
from .layout import detect_layout, parse_channel_map
from .maintenance import UNLABELED, Interval, parse_maintenance, with_log_classes
from .report import report_markdown

__all__ = ["REPORT_NAME", "read_maintenance", "read_signals", "run_import"]

log = logging.getLogger(__name__)

REPORT_NAME = "import_report.json"
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")


def _csv_rows(path: Path) -> tuple[list[str], Iterator[tuple[int, Sequence[object]]]]:
    """(header, rows with their line numbers) of a CSV file; ConfigError if unreadable."""
    try:
        fh = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}; check the path") from exc
    reader = csv.reader(fh)
    try:
        header = next(reader, None)
    except (csv.Error, UnicodeDecodeError) as exc:
        fh.close()
        raise ConfigError(f"{path} is not a UTF-8 CSV file: {exc}") from exc
    if header is None:
        fh.close()
        raise ConfigError(f"{path} is empty; a historian export starts with a header row")

    def rows() -> Iterator[tuple[int, Sequence[object]]]:
        with fh:
            stuck = -1
            while True:
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:  # one row (a field beyond the field limit): refused,
                    if reader.line_num == stuck:  # counted, and the next row read
                        raise ConfigError(f"{path}:{reader.line_num}: {exc}") from exc
                    stuck = reader.line_num
                    yield reader.line_num, UNREADABLE
                    continue
                except UnicodeDecodeError as exc:
                    raise ConfigError(
                        f"{path}:{reader.line_num}: cannot be read as UTF-8 CSV ({exc}); the "
                        "rows before it were read; fix or cut the file there"
                    ) from exc
                if cells:
                    yield reader.line_num, cells

    return header, rows()


def _parquet_rows(path: Path) -> tuple[list[str], Iterator[tuple[int, Sequence[object]]]]:
    """(column names, rows numbered from 1) of a Parquet file, via pyarrow."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ConfigError(
            f"{path} is Parquet: install pyarrow on the trainer (pip install pyarrow), or "
            "export CSV"
        ) from exc
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise ConfigError(f"cannot read Parquet file {path}: {exc}") from exc
    header = list(parquet.schema_arrow.names)

    def column(col: Any) -> list[object]:
        if pa.types.is_timestamp(col.type):  # exact: epoch seconds, without datetime rounding
            per_s = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[col.type.unit]
            ints = col.cast(pa.int64()).to_numpy(zero_copy_only=False)
            return [None if v is None else float(v) / per_s for v in ints.tolist()]
        values: list[object] = col.to_pylist()
        return values

    def rows() -> Iterator[tuple[int, Sequence[object]]]:
        line = 0
        try:
            for batch in parquet.iter_batches(batch_size=65536):
                columns = [column(batch.column(i)) for i in range(batch.num_columns)]
                for cells in zip(*columns, strict=True):
                    line += 1
                    yield line, cells
        except (OSError, pa.ArrowException) as exc:
            raise ConfigError(f"Parquet file {path} row {line + 1}: {exc}") from exc

    return header, rows()


def read_signals(
    paths: Sequence[Path],
    fmt: str = "auto",
    channel_map: dict[str, str] | None = None,
    kind: MachineType = DEFAULT_TYPE,
) -> tuple[Collector, list[dict[str, Any]]]:
    """Every sample of `paths` in one Collector, and per file its layout and row count."""
    collector = Collector(channel_map, kind.channel_names)
    inputs = []
    for path in paths:
        parquet = path.suffix.lower() in PARQUET_SUFFIXES
        header, rows = _parquet_rows(path) if parquet else _csv_rows(path)
        try:
            layout = detect_layout(header, fmt, collector.channel_map, kind.channel_names)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        before = collector.rows
        collector.feed(layout, rows, path.name)
        info = {"file": str(path), "format": layout.fmt, "rows": collector.rows - before}
        if layout.unknown_columns:
            info["unknown_columns"] = layout.unknown_columns
            log.warning(
                "%s: column(s) %s name no model channel; their cells are refused (map them "
                "with --channel-map OLD=NEW)",
                path,
                layout.unknown_columns,
            )
        inputs.append(info)
        log.info("%s: %s table, %d rows", path, layout.fmt, info["rows"])
    return collector, inputs


def read_maintenance(path: Path, kind: MachineType = DEFAULT_TYPE) -> list[Interval]:
    """The intervals of a maintenance log CSV (`machine, from, to, class`)."""
    header, rows = _csv_rows(path)
    return parse_maintenance(header, rows, str(path), kind.classes)


def log_classes(path: Path, kind: MachineType) -> MachineType:
    """`kind` with the maintenance log's class names it does not list appended, for a type
    with `open_classes` (the data set's classes.json then lists them; a closed type refuses
    them in `read_maintenance`)."""
    header, rows = _csv_rows(path)
    return with_log_classes(header, rows, str(path), kind)


def _write(out: Path, data: DataSet, report: dict[str, Any], kind: MachineType) -> None:
    """The data set files (module docstring), each written whole then renamed into place."""
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "infer"):
        for suffix in ("data", "labels"):
            (out / f"{split}_{suffix}.npy").unlink(missing_ok=True)  # no stale split remains
    arrays: dict[str, np.ndarray] = {"unlabeled_data": data.unlabeled}
    for split, (x, y) in data.splits.items():
        arrays[f"{split}_data"] = x.astype(np.float32)
        arrays[f"{split}_labels"] = y.astype(np.int64)
    for name, arr in arrays.items():
        tmp = out / f".{name}.npy.tmp"
        with tmp.open("wb") as fh:
            np.save(fh, arr, allow_pickle=False)
        tmp.replace(out / f"{name}.npy")
    with (out / "windows.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["split", "row", "machine", "start", "label"])
        for split, row, machine, start, label in data.index:
            when = np.datetime64(round(start * 1e6), "us").astype(str) + "Z"
            name = "" if label == UNLABELED else kind.classes[label]
            w.writerow([split, row, machine, when, name])
    meta: dict[str, Any] = {
        "classes": list(kind.classes),
        "channels": list(kind.channel_names),
        "units": [c.unit for c in kind.channels],
        "window_length": kind.window_length,
    }
    if kind.name != DEFAULT_TYPE.name:
        meta["machine_type"] = kind.to_dict()
    (out / "classes.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")


def run_import(config: ImportConfig) -> dict[str, Any]:
    """Read, window, label, split and write; returns the report (also in OUT/import_report.json).

    ConfigError (exit 2) for a missing or malformed file or a data set that would be empty.
    """
    if not config.signals:
        raise ConfigError("no historian file given: pass FILE… or --signals FILE[,FILE]")
    for path in (*config.signals, *([config.maintenance] if config.maintenance else [])):
        if not path.is_file():
            raise ConfigError(f"{path} is not a file; check the path")
    kind = config.machine()
    if config.window_length is not None and config.window_length != kind.window_length:
        kind = dataclasses.replace(kind, window_length=config.window_length)
    if config.maintenance and kind.open_classes:  # a log may name classes nobody declared
        kind = log_classes(config.maintenance, kind)
    intervals = read_maintenance(config.maintenance, kind) if config.maintenance else []
    channel_map = parse_channel_map(config.channel_map, kind.channel_names)
    collector, inputs = read_signals(config.signals, config.signal_format, channel_map, kind)
    if config.maintenance is None and not config.unlabeled_normal:
        log.warning("no --maintenance log and no --unlabeled-normal: every window is unlabeled")
    data = build_dataset(
        collector,
        intervals,
        config.grid_for(kind),
        holdout=config.holdout,
        unlabeled_normal=config.unlabeled_normal,
        kind=kind,
    )
    report = {
        "inputs": inputs,
        "maintenance": str(config.maintenance) if config.maintenance else None,
        "intervals": len(intervals),
        **data.report,
    }
    _write(config.out, data, report, kind)
    if config.report is not None:
        text = (
            json.dumps(report, indent=2) + "\n"
            if config.report.suffix.lower() == ".json"
            else report_markdown(report)
        )
        try:
            config.report.parent.mkdir(parents=True, exist_ok=True)
            config.report.write_text(text)
        except OSError as exc:
            raise ConfigError(f"cannot write the report {config.report}: {exc}") from exc
    _log_report(report, config.out)
    return report


def _log_report(report: dict[str, Any], out: Path) -> None:
    for name, m in report["machines"].items():
        log.info(
            "%s: %s … %s, covered %.0f s, %d gap(s) %.0f s, %d windows (%s), %d unlabeled "
            "(%d straddling), train %d, infer %d",
            name,
            m["first"],
            m["last"],
            m["covered_s"],
            m["gaps"],
            m["gap_s"],
            m["windows"],
            ", ".join(f"{c} {n}" for c, n in m["classes"].items() if n),
            m["unlabeled"],
            m["straddling"],
            m["train"],
            m["infer"],
        )
    for kind, r in report["refused"].items():
        log.warning("refused %d %s (first at %s)", r["count"], kind, ", ".join(r["first"]))
    for warning in report["warnings"]:
        log.warning("%s", warning)
    splits = report["splits"]
    log.info(
        "wrote %s: %s; %d unlabeled",
        out,
        "; ".join(
            f"{s} " + ", ".join(f"{c} {n}" for c, n in counts.items())
            for s, counts in splits.items()
            if s != "unlabeled"
        ),
        splits["unlabeled"],
    )
