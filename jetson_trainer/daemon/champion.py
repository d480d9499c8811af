"""The daemon's champion: the newest verified bundle on disk, else one trained from the data.

A bundle that does not verify (corrupt, tampered, signed by another key), that was made for
another site than the daemon's --prefix, or whose Keras model does not load is skipped and
reported, and the next older version is tried, so one bad file on disk never keeps the daemon
from starting. A model trained when none is usable gets the next version number after every
`v*` directory on disk: the Pis refuse a version below the newest they accepted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protocol import DEFAULT_PREFIX, EdgeloopError, Topics, decode_bundle
from protocol.machine_type import DEFAULT_TYPE, MachineType

from ..errors import TrainerError
from .retrain import Champion

__all__ = [
    "Loaded",
    "OriginalData",
    "load_champion",
    "load_original",
    "next_version",
    "public_key_of",
    "publish_champion",
    "train_initial",
]

log = logging.getLogger(__name__)
HOLDOUT_FRACTION = 0.2  # of train_* kept as the gate's original holdout when infer_* is absent


@dataclass(frozen=True, slots=True)
class OriginalData:
    """The original (pre-drift) data, read once: all of train_* for the initial model, the
    replay part mixed into fine-tunes and the holdout the gate checks forgetting on."""

    train: tuple[np.ndarray, np.ndarray]
    replay: tuple[np.ndarray, np.ndarray]
    holdout: tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True, slots=True)
class Loaded:
    """The champion found on disk (None if no version verified) and the versions skipped."""

    champion: Champion | None
    skipped: tuple[str, ...] = ()  # "v0003/model.bundle: why", newest first


def load_original(data: Path | None, kind: MachineType = DEFAULT_TYPE) -> OriginalData | None:
    """train_*.npy (and infer_*.npy as holdout, else the last 20 % of train_*) from `data`,
    checked against the daemon's machine type `kind` (TrainerError saying what differs)."""
    from ..build.data import load_split

    if data is None:
        log.warning("no --data: fine-tunes run without replay and gate on drift data only")
        return None
    got = load_split(data, "train", kind)
    if got is None:
        raise TrainerError(f"--data {data} has no train_data.npy + train_labels.npy")
    x, y = got
    infer = load_split(data, "infer", kind)
    if infer is not None:
        return OriginalData((x, y), (x, y), infer)
    cut = int(len(y) * (1 - HOLDOUT_FRACTION))
    return OriginalData((x, y), (x[:cut], y[:cut]), (x[cut:], y[cut:]))


def public_key_of(private_key: Path) -> bytes:
    """The raw Ed25519 public key of the daemon's signing key: what its bundles verify with."""
    from cryptography.hazmat.primitives import serialization

    from ..build.keys import load_private_key

    return (
        load_private_key(private_key)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


def next_version(models_dir: Path) -> int:
    """1 + the highest version directory (`v0007/` → 7) under `models_dir`; 1 if none."""
    versions = [
        int(p.name[1:]) for p in Path(models_dir).glob("v*") if p.is_dir() and p.name[1:].isdigit()
    ]
    return max(versions, default=0) + 1


def _dir_version(d: Path) -> int | None:
    """7 for a `v0007` directory, else None."""
    return int(d.name[1:]) if d.name[:1] == "v" and d.name[1:].isdigit() else None


def load_champion(
    models_dir: Path,
    public_key: bytes,
    site: str | None = None,
    exclude: frozenset[int] = frozenset(),
    machine_type: str = DEFAULT_TYPE.name,
) -> Loaded:
    """The newest `v*/model.bundle` under `models_dir` that verifies, was made for `site` (if
    given) and `machine_type`, is not one of the `exclude`d versions (those a node rolled back:
    the model registry's bad versions) and whose Keras model loads."""
    import keras

    skipped: list[str] = []
    for path in sorted(models_dir.glob("v*/model.bundle"), reverse=True):
        if _dir_version(path.parent) in exclude:
            log.info("not loading %s: a node rolled it back (marked bad)", path)
            continue
        try:
            bundle = decode_bundle(path.read_bytes(), public_key)
            if bundle.manifest.version in exclude:
                log.info("not loading %s: v%d was rolled back", path, bundle.manifest.version)
                continue
            if site is not None and bundle.manifest.site != site:
                raise EdgeloopError(
                    f"made for site {bundle.manifest.site!r}, this trainer's --prefix is "
                    f"{site!r}; the Pis would refuse it"
                )
            if bundle.manifest.type_name != machine_type:
                raise EdgeloopError(
                    f"a model of machine type {bundle.manifest.type_name}, this trainer's is "
                    f"{machine_type}"
                )
            model = keras.models.load_model(path.parent / "model.keras")
        except (OSError, ValueError, EdgeloopError) as exc:
            # BundleError (tampered, wrong key) and PayloadError are both EdgeloopErrors
            log.warning("skipping %s: %s; trying the next older version", path, exc)
            skipped.append(f"{path.relative_to(models_dir)}: {exc}")
            continue
        log.info("champion: v%d from %s", bundle.manifest.version, path)
        champion = Champion(
            bundle.manifest.version, bundle.raw, bundle.model, bundle.manifest, model, path
        )
        return Loaded(champion, tuple(skipped))
    return Loaded(None, tuple(skipped))


def train_initial(
    models_dir: Path,
    original: OriginalData,
    private_key: Path,
    *,
    epochs: int,
    site: str = DEFAULT_PREFIX,
    kind: MachineType = DEFAULT_TYPE,
) -> Path:
    """Train, convert and sign a first model of machine type `kind` for `site` from the
    original data, as the next version after any on disk (v1 in an empty store); return its
    bundle path. Data of the healthy class alone (a cold start, no fault history) gives an
    anomaly model (build/anomaly.py). int8 ships when it agrees with Keras, else float16 or
    float32 with the reason in the manifest (`shipped_reason`), as `train` does."""
    from ..build.convert import QUANTIZATIONS
    from ..build.pipeline import run_train
    from ..build.rocket import architecture_for

    version = next_version(models_dir)
    x, y = original.train
    if len(np.unique(y)) == 1 and int(y[0]) == kind.classes.index(kind.normal):
        from ..build.anomaly import run_train_anomaly

        log.info("the original data holds the healthy class only: training an anomaly model")
        anomaly = run_train_anomaly(
            x,
            y,
            models_dir / f"v{version:04d}",
            kind=kind,
            private_key=private_key,
            version=version,
            site=site,
        )
        return Path(anomaly.bundle_path)
    compact = architecture_for(x.shape[1]) == "compact"
    outcome = run_train(
        *original.train,
        models_dir / f"v{version:04d}",
        version=version,
        site=site,
        epochs=epochs,
        private_key=private_key,
        figures=False,
        verbose=0,
        time_repeats=10,
        quantizations=QUANTIZATIONS,  # long windows: all three, their figures in the report
        fallback_only=compact,  # int8 alone when it agrees, else float16, then float32
        kind=kind,
        arch="auto",
    )
    return outcome.bundle_path


def publish_champion(client: Any, topics: Topics, champion: Champion) -> None:
    """Publish the champion's bundle retained, QoS 1, on its machine type's model topic
    (`model/current` for the built-in type): the Pis' single source of truth."""
    topic = topics.model_of(champion.manifest.type_name)
    client.publish(topic, champion.bundle, qos=1, retain=True)
    log.info(
        "publishing model v%d retained on %s (%d bytes)",
        champion.version,
        topic,
        len(champion.bundle),
    )
