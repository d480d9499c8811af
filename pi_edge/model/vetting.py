"""Model bundles on the Pi: the checks a bundle passes before it may run.

Signature (over the raw bytes, before any field is read), the site it was made for, a version
above the node's high-water mark, compatibility with what the node can feed it, and the golden
vectors on this runtime. The state dir that keeps the last good bundle is state_dir.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from protocol import Bundle, BundleError, Manifest, decode_bundle
from protocol.topics import DEFAULT_TYPE_NAME

from ..errors import ModelError
from ..intake.inbox import BatchPolicy
from .anomaly import AnomalyScorer, is_anomaly
from .anomaly_head import HeadedClassifier, is_headed
from .classifier import Classifier

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Expected:
    """What the running config can feed a model: its machine type, classes, channels and window
    length. None for classes, channels or window length: whatever the verified bundle says (a
    node takes a type's vocabulary from the model it verified)."""

    classes: tuple[str, ...] | None
    channels: tuple[str, ...] | None
    window_length: int | None
    machine_type: str = DEFAULT_TYPE_NAME

    def check(self, manifest: Manifest) -> None:
        """ModelError(kind="incompatible") naming the first mismatch.

        >>> from protocol import CLASSES, CHANNELS
        >>> e = Expected(CLASSES, CHANNELS, 60)
        >>> m = Manifest(version=1, model_sha256="0" * 64, model_bytes=0, window_length=30)
        >>> e.check(m)
        Traceback (most recent call last):
        ...
        pi_edge.errors.ModelError: bundle v1 has window_length 30, this node expects 60; ...
        >>> Expected(None, None, None, "press").check(m)
        Traceback (most recent call last):
        ...
        pi_edge.errors.ModelError: bundle v1 is for machine type 'default', this node expects ...
        """
        if manifest.type_name != self.machine_type:
            raise ModelError(
                f"bundle v{manifest.version} is for machine type {manifest.type_name!r}, this "
                f"node expects {self.machine_type!r} on this topic; the trainer publishes each "
                "type's models on its own topic (protocol/README.md, 'Machine types')",
                kind="incompatible",
            )
        if manifest.task not in ("classify", "anomaly"):
            raise ModelError(
                f"bundle v{manifest.version} is a {manifest.task!r} model; this node serves "
                "classifiers and anomaly models (tasks 'classify', 'anomaly')",
                kind="incompatible",
            )
        self._check_classes(manifest)
        for name, want, got in (
            ("channels", self.channels, manifest.channels),
            ("window_length", self.window_length, manifest.window_length),
        ):
            if want is not None and want != got:
                raise ModelError(
                    f"bundle v{manifest.version} has {name} {got}, this node expects {want}; "
                    "publish a model trained for this node's sensors or change the node's config",
                    kind="incompatible",
                )

    def _check_classes(self, manifest: Manifest) -> None:
        """A model may know fewer classes than the node's type declares (an anomaly model knows
        its healthy class; a classifier grown from one knows the faults labeled so far), never
        a class the type does not declare, and its healthy class must be the type's.

        >>> from protocol import CLASSES
        >>> e = Expected(CLASSES, None, None)
        >>> m = Manifest(version=3, model_sha256="0" * 64, model_bytes=0,
        ...              classes=("normal", "pump_fault"))
        >>> e.check(m)
        >>> e.check(Manifest(version=4, model_sha256="0" * 64, model_bytes=0,
        ...                  classes=("normal", "seal_leak")))
        Traceback (most recent call last):
        ...
        pi_edge.errors.ModelError: bundle v4 has classes ('normal', 'seal_leak'), this node ...
        """
        want = self.classes
        if want is None or want == manifest.classes:
            return
        known = set(want)
        if manifest.classes[0] != want[0] or any(c not in known for c in manifest.classes):
            raise ModelError(
                f"bundle v{manifest.version} has classes {manifest.classes}, this node expects "
                f"{want} (or some of them, healthy class {want[0]!r} first); publish a model "
                "trained for this node's machine type or declare its classes",
                kind="incompatible",
            )


@dataclass(frozen=True, slots=True)
class VettedModel:
    """A bundle that passed every check, with its ready-to-run classifier (an `AnomalyScorer`
    for an anomaly model: model/anomaly.py; a `HeadedClassifier` for a classifier with an
    anomaly head: model/anomaly_head.py)."""

    bundle: Bundle
    classifier: Classifier | AnomalyScorer | HeadedClassifier

    @property
    def version(self) -> int:
        return self.bundle.manifest.version

    @property
    def classes(self) -> tuple[str, ...]:
        """What its outputs mean: the manifest's classes, or (healthy, `anomaly`), or the
        manifest's classes and `anomaly`."""
        clf = self.classifier
        if isinstance(clf, AnomalyScorer | HeadedClassifier):
            return clf.classes
        return self.bundle.manifest.classes

    @property
    def anomaly(self) -> AnomalyScorer | None:
        clf = self.classifier
        return clf if isinstance(clf, AnomalyScorer) else None

    @property
    def head(self) -> HeadedClassifier | None:
        """The classifier, if it carries an anomaly head."""
        clf = self.classifier
        return clf if isinstance(clf, HeadedClassifier) else None


def check_site(manifest: Manifest, site: str) -> None:
    """ModelError(kind="site") unless the bundle was made for `site`, this node's topic prefix.

    >>> m = Manifest(version=2, model_sha256="0" * 64, model_bytes=0, site="plant-a/v1")
    >>> check_site(m, "plant-a/v1")
    >>> check_site(m, "plant-b/v1")
    Traceback (most recent call last):
    ...
    pi_edge.errors.ModelError: bundle v2 was made for site 'plant-a/v1', this node's prefix ...
    """
    if manifest.site != site:
        made_for = repr(manifest.site) if manifest.site else "no site (an older trainer)"
        raise ModelError(
            f"bundle v{manifest.version} was made for site {made_for}, this node's prefix is "
            f"{site!r}; publish a model the trainer made with --prefix {site}",
            kind="site",
        )


def check_not_replayed(manifest: Manifest, highest: int) -> None:
    """ModelError(kind="replay") if the bundle is older than `highest`, the newest accepted.

    Versions from the network only go up; going down is an operator's `pi_edge rollback`.

    >>> m = Manifest(version=2, model_sha256="0" * 64, model_bytes=0)
    >>> check_not_replayed(m, 2)
    >>> check_not_replayed(m, 3)
    Traceback (most recent call last):
    ...
    pi_edge.errors.ModelError: bundle v2 is older than v3, the newest this node accepted; ...
    """
    if manifest.version < highest:
        raise ModelError(
            f"bundle v{manifest.version} is older than v{highest}, the newest this node "
            "accepted; a replayed bundle cannot roll a node back (an operator can: `pi_edge "
            "rollback` on the node, or have the trainer re-issue the old model as a new version)",
            kind="replay",
        )


def verify_bundle(
    data: bytes, *, public_key: bytes | tuple[bytes, ...] | None, allow_unsigned: bool
) -> Bundle:
    """Signature over the raw bytes first, then layout, manifest and sha256 (ModelError)."""
    try:
        bundle = decode_bundle(data, public_key, allow_unsigned=allow_unsigned)
    except BundleError as exc:
        raise ModelError(str(exc), kind=exc.kind) from exc
    return bundle


def build_model(
    bundle: Bundle, *, expected: Expected, threads: int = 1, policy: BatchPolicy | None = None
) -> VettedModel:
    """Check compatibility, build an interpreter, run the golden vectors (ModelError)."""
    expected.check(bundle.manifest)
    model: Classifier | AnomalyScorer | HeadedClassifier
    model = Classifier(bundle.model, bundle.manifest, threads=threads, policy=policy)
    if is_anomaly(bundle.manifest):
        model = AnomalyScorer(model)
    elif is_headed(bundle.manifest):
        model = HeadedClassifier(model)
    model.check_golden()
    return VettedModel(bundle, model)


def vet_bundle(
    data: bytes,
    *,
    public_key: bytes | tuple[bytes, ...] | None,
    allow_unsigned: bool,
    expected: Expected,
    threads: int = 1,
    policy: BatchPolicy | None = None,
) -> VettedModel:
    """Verify + decode + check compatibility + build an interpreter + run the golden vectors.

    Raises ModelError whose `.kind` is the failed check (signature, checksum, truncated,
    incompatible, golden, runtime, ...).
    """
    bundle = verify_bundle(data, public_key=public_key, allow_unsigned=allow_unsigned)
    return build_model(bundle, expected=expected, threads=threads, policy=policy)
