"""The model manifest: what a node must know about a model before it runs it, every field checked.

A manifest comes off the network inside a bundle, so `Manifest.__post_init__` checks the type,
size and range of every field and raises only BundleError: a list where an object belongs, a
400-digit number or a 10,000-entry golden list is refused here, and can never surface later as an
AttributeError or OverflowError in a node's thread. `protocol.bundle.decode_bundle` parses a
manifest only after the bundle's signature verified and its size is within MAX_MANIFEST_BYTES.

>>> m = Manifest(version=2, model_sha256="0" * 64, model_bytes=10, site="edgeloop/v1")
>>> m.input_shape, m.site, m.machine().name, m.task
((60, 4), 'edgeloop/v1', 'default', 'classify')
>>> fan = {"name": "fan", "channels": [{"name": "vib", "unit": "g"}], "sample_hz": 1000.0,
...        "hop": 256, "normal": "ok", "open_classes": True, "machines": ["fan-*"]}
>>> f = Manifest(version=1, model_sha256="0" * 64, model_bytes=10, classes=("ok",),
...              channels=("vib",), window_length=256, machine_type=fan, task="anomaly",
...              anomaly={"threshold": 3.5})
>>> f.machine().name, f.machine().unit_of("vib"), f.machine().open_classes, f.task
('fan', 'g', True, 'anomaly')
>>> Manifest.from_dict({**m.to_dict(), "normalisation": [1]})
Traceback (most recent call last):
...
protocol.errors.BundleError: manifest normalisation must be an object, not list; ...
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import BundleError, ConfigError
from .machine_type import DEFAULT_TYPE, MAX_CLASSES, Channel, MachineType
from .schema import CHANNELS, CLASSES, UNITS, WINDOW_LENGTH
from .window import MAX_SAMPLES

__all__ = [
    "HEAD_OUTPUTS",
    "MANIFEST_FORMAT",
    "MAX_MANIFEST_BYTES",
    "TASKS",
    "Manifest",
    "parse_manifest",
]

MANIFEST_FORMAT = 1
MAX_MANIFEST_BYTES = 1024 * 1024  # a trainer's manifest is ~40 KB; checked from the header
MAX_VERSION = 2**31 - 1
MAX_NAMES = MAX_CLASSES  # classes (channels: 16, checked through the machine type)
MAX_NAME_CHARS = 64
MAX_TEXT_CHARS = 256  # quantization, arch, converter, site
MAX_WINDOW_LENGTH = MAX_SAMPLES  # the window frame's limit
TASKS = ("classify", "anomaly")  # what the model's output means
HEAD_OUTPUTS = 2  # a classifier's anomaly head: [u, r] (protocol/README.md)
_TYPE_KEYS = frozenset(
    {"name", "channels", "sample_hz", "hop", "normal", "open_classes", "machines"}
)
MAX_GOLDEN = 64
MAX_DEPTH = 16  # nesting of the free-form objects (train_stats, metrics, extra)
MAX_INT = 2**63  # |integer| in free-form objects
MAX_ABS = 1e30  # |value| of numbers fed to float32 (normalisation, golden, features)
_REMAKE = "re-make the bundle with this release's jetson_trainer"


def _fail(message: str) -> BundleError:
    return BundleError(f"manifest {message}; {_REMAKE}")


def _kind(value: Any) -> str:
    return type(value).__name__


def _int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        shown = _kind(value) if not isinstance(value, int) else "out of range"
        raise _fail(f"{name} must be an integer in {low}..{high} ({shown})")
    return value


def _real(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        shown = _kind(value) if not isinstance(value, int | float) else "out of range"
        raise _fail(f"{name} must be a number in {low:g}..{high:g} ({shown})")
    return float(value)


def _text(name: str, value: Any, limit: int = MAX_TEXT_CHARS) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise _fail(f"{name} must be a string of at most {limit} characters")
    return value


def _object(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(f"{name} must be an object, not {_kind(value)}")
    return value


def _numbers(name: str, value: Any, n: int, low: float = -MAX_ABS, high: float = MAX_ABS) -> None:
    """A list of exactly `n` numbers, each in low..high (NaN and ±inf are never in range)."""
    if not isinstance(value, list | tuple) or len(value) != n:
        got = f"{len(value)} items" if isinstance(value, list | tuple) else _kind(value)
        raise _fail(f"{name} must be a list of {n} numbers, not {got}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or not low <= v <= high:
            raise _fail(f"{name} must hold numbers in {low:g}..{high:g}")


def _names(name: str, value: Any, least: int) -> tuple[str, ...]:
    """A list of `least`..MAX_NAMES distinct names of 1..MAX_NAME_CHARS characters."""
    if not isinstance(value, list | tuple) or not least <= len(value) <= MAX_NAMES:
        raise _fail(f"{name} must be a list of {least}..{MAX_NAMES} distinct names")
    for v in value:
        if not isinstance(v, str) or not 0 < len(v) <= MAX_NAME_CHARS:
            raise _fail(f"{name} must hold names of 1..{MAX_NAME_CHARS} characters")
    if len(set(value)) != len(value):
        raise _fail(
            f"{name} must be {least}..{MAX_NAMES} distinct names, {list(value)} repeats one"
        )
    return tuple(value)


def _plain(name: str, value: Any, depth: int = 0) -> None:
    """A JSON value of bounded depth: finite floats and |integers| ≤ 2^63 only."""
    if depth > MAX_DEPTH:
        raise _fail(f"{name} is nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise _fail(f"{name} holds an integer beyond ±2^63")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _fail(f"{name} holds a non-finite number")
    elif isinstance(value, list | tuple):
        for item in value:
            _plain(name, item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _fail(f"{name} has a non-string key")
            _plain(name, item, depth + 1)
    else:
        raise _fail(f"{name} holds a {_kind(value)}, which JSON has not")


@dataclass(frozen=True, slots=True)
class Manifest:
    """What the Pi must know about a model before it runs it.

    site:          the topic prefix the model was made for; a node refuses a bundle from the
                   network whose site is not its own prefix ("" = unbound, refused there too).
    normalisation: per-channel `mean`/`std` of the model's input (`protocol.model_input`).
    train_stats:   per-channel statistics of the training data, for drift detection.
    metrics:       validation figures, including `mean_confidence`.
    golden:        a few raw windows with the probabilities the model must reproduce.
    """

    version: int
    model_sha256: str
    model_bytes: int
    parent: int | None = None
    site: str = ""
    created: float = 0.0
    classes: tuple[str, ...] = CLASSES
    channels: tuple[str, ...] = CHANNELS
    window_length: int = WINDOW_LENGTH
    quantization: str = "int8"
    arch: str = ""
    converter: str = ""
    normalisation: dict[str, list[float]] = field(default_factory=dict)
    train_stats: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    golden: list[dict[str, Any]] = field(default_factory=list)
    golden_tolerance: float = 0.05
    format: int = MANIFEST_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)
    machine_type: dict[str, Any] | None = None  # None: the built-in type "default"
    task: str = "classify"
    anomaly: dict[str, Any] | None = None  # task "anomaly": {"threshold": score above = anomaly}

    def __post_init__(self) -> None:
        fmt = self.format
        if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt != MANIFEST_FORMAT:
            shown = fmt if isinstance(fmt, int) and 0 <= fmt < 1000 else _kind(fmt)
            raise BundleError(
                f"manifest format {shown}, this build reads {MANIFEST_FORMAT}; upgrade pi_edge",
                kind="version",
            )
        _int("version", self.version, 1, MAX_VERSION)
        if self.parent is not None:
            _int("parent", self.parent, 1, MAX_VERSION)
        sha = _text("model_sha256", self.model_sha256, 64)
        if len(sha) != 64 or sha.strip("0123456789abcdef"):
            raise _fail("model_sha256 must be 64 lowercase hex digits")
        _int("model_bytes", self.model_bytes, 0, 2**32 - 1)
        site = _text("site", self.site)
        if site.startswith("/") or site.endswith("/") or "+" in site or "#" in site:
            raise _fail(f"site {site!r} is not a topic prefix")
        _real("created", self.created, 0.0, 1e12)
        if self.task not in TASKS:
            raise BundleError(
                f"manifest task {str(self.task)[:40]!r}, this build knows {list(TASKS)}; "
                "upgrade pi_edge",
                kind="version",
            )
        least = 1 if self.task == "anomaly" else 2  # an anomaly model knows only the healthy class
        object.__setattr__(self, "classes", _names("classes", self.classes, least))
        object.__setattr__(self, "channels", _names("channels", self.channels, 1))
        _int("window_length", self.window_length, 1, MAX_WINDOW_LENGTH)
        for name in ("quantization", "arch", "converter"):
            _text(name, getattr(self, name))
        self._check_normalisation()
        self._check_train_stats()
        self._check_metrics()
        self._check_golden()
        _real("golden_tolerance", self.golden_tolerance, 0.0, 1.0)
        _plain("extra", _object("extra", self.extra))
        self._check_machine_type()
        self._check_anomaly()

    def _check_machine_type(self) -> None:
        """`machine_type` names the type and what the model's fields do not say (units, rates,
        hop, normal class, members); the model's classes, channels and window length are the
        manifest's own fields, and the type must agree with them."""
        raw = self.machine_type
        if raw is None:
            return
        obj = _object("machine_type", raw)
        unknown = sorted(set(obj) - _TYPE_KEYS)
        if unknown:
            raise _fail(f"machine_type has unknown field(s) {unknown[:8]}")
        _plain("machine_type", obj)
        try:
            kind = MachineType.from_dict(
                {
                    **obj,
                    "classes": list(self.classes),
                    "window_length": self.window_length,
                },
                "manifest machine_type",
            )
        except ConfigError as exc:
            raise _fail(str(exc)) from None
        if kind.channel_names != self.channels:
            raise _fail(
                f"machine_type channels {list(kind.channel_names)} differ from the model's "
                f"{list(self.channels)}"
            )

    def _check_anomaly(self) -> None:
        """Task "anomaly": `{threshold, method}`. A classifier may carry an anomaly head (its
        model's second output, [u, r]: protocol/README.md "Anomaly models and class growth"):
        `{threshold, method, golden}`, `golden` the head's output for each golden vector."""
        if self.anomaly is None:
            if self.task == "anomaly":
                raise _fail("anomaly must be {'threshold': number, 'method': text}")
            return
        obj = _object("anomaly", self.anomaly)
        keys = {"threshold", "method"} | ({"golden"} if self.task == "classify" else set())
        if set(obj) - keys or "threshold" not in obj:
            raise _fail(f"anomaly must have the fields {sorted(keys)} (threshold required)")
        _real("anomaly.threshold", obj["threshold"], 1e-12, MAX_ABS)
        _text("anomaly.method", obj.get("method", ""))
        if self.task == "classify":
            golden = obj.get("golden")
            if not isinstance(golden, list | tuple) or len(golden) != len(self.golden):
                raise _fail(
                    f"anomaly.golden must hold the head's output for each of the "
                    f"{len(self.golden)} golden vectors"
                )
            for i, pair in enumerate(golden):
                _numbers(f"anomaly.golden[{i}]", pair, HEAD_OUTPUTS)

    @property
    def has_head(self) -> bool:
        """A classifier whose model has a second output, the anomaly head."""
        return self.task == "classify" and self.anomaly is not None

    def machine(self) -> MachineType:
        """The machine type this model is for, with the model's classes and window length."""
        if self.machine_type is None:
            if self.classes == CLASSES and self.input_shape == DEFAULT_TYPE.input_shape:
                return DEFAULT_TYPE
            return MachineType(
                DEFAULT_TYPE.name,
                tuple(Channel(c, UNITS.get(c, "")) for c in self.channels),
                window_length=self.window_length,
                classes=self.classes,
                machines=DEFAULT_TYPE.machines,
            )
        fields = {"classes": list(self.classes), "window_length": self.window_length}
        return MachineType.from_dict({**self.machine_type, **fields})

    @property
    def type_name(self) -> str:
        """The machine type's name ("default" for a manifest without `machine_type`)."""
        return DEFAULT_TYPE.name if self.machine_type is None else str(self.machine_type["name"])

    def _check_normalisation(self) -> None:
        norm = _object("normalisation", self.normalisation)
        if not norm:
            return
        if set(norm) != {"mean", "std"}:
            raise BundleError(
                f"manifest normalisation needs 'mean' and 'std' lists of {len(self.channels)}"
            )
        try:
            _numbers("normalisation mean", norm["mean"], len(self.channels))
            _numbers("normalisation std", norm["std"], len(self.channels), 1e-30, MAX_ABS)
        except BundleError as exc:
            raise BundleError(
                f"manifest normalisation has a non-finite mean or a std ≤ 0 ({exc})"
            ) from None

    def _check_train_stats(self) -> None:
        stats = _object("train_stats", self.train_stats)
        _plain("train_stats", stats)
        features = stats.get("features")
        if features is None:
            return
        per_class = _object(
            "train_stats.features.per_class",
            _object("train_stats.features", features).get("per_class"),
        )
        missing = [c for c in self.classes if c not in per_class]
        if missing:
            raise _fail(f"train_stats.features.per_class lacks classes {missing}")
        n = 2 * len(self.channels)
        for name, value in per_class.items():
            where = f"train_stats.features.per_class.{name:.64}"
            entry = _object(where, value)
            _numbers(f"{where}.mean", entry.get("mean"), n)
            _numbers(f"{where}.std", entry.get("std"), n, 0.0)

    def _check_metrics(self) -> None:
        metrics = _object("metrics", self.metrics)
        _plain("metrics", metrics)
        for name in ("accuracy", "mean_confidence"):  # the drift monitor's reference values
            if name in metrics:
                _real(f"metrics.{name}", metrics[name], 0.0, 1.0)
        per_class_key = "mean_confidence_per_class"  # optional: bundles before issue 14 lack it
        if per_class_key in metrics:
            per_class = _object(f"metrics.{per_class_key}", metrics[per_class_key])
            for name, value in per_class.items():
                if name not in self.classes:
                    raise _fail(f"metrics.{per_class_key} names unknown class {name!r:.64}")
                _real(f"metrics.{per_class_key}.{name:.64}", value, 0.0, 1.0)

    def _check_golden(self) -> None:
        golden = self.golden
        if not isinstance(golden, list | tuple) or len(golden) > MAX_GOLDEN:
            raise _fail(f"golden must be a list of at most {MAX_GOLDEN} vectors")
        t, c, k = self.window_length, len(self.channels), len(self.classes)
        for i, item in enumerate(golden):
            g = _object(f"golden[{i}]", item)
            if set(g) != {"x", "probs"}:
                raise _fail(f"golden[{i}] must have exactly 'x' and 'probs'")
            x = g["x"]
            if not isinstance(x, list | tuple) or len(x) != t:
                raise _fail(f"golden[{i}].x must be {t} rows of {c} numbers")
            for row in x:
                _numbers(f"golden[{i}].x row", row, c)
            _numbers(f"golden[{i}].probs", g["probs"], k)

    @property
    def input_shape(self) -> tuple[int, int]:
        return (self.window_length, len(self.channels))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object; a default-type classifier's has no machine_type, task or anomaly
        (byte for byte what a manifest was before machine types, so older nodes take it)."""
        d = asdict(self)
        d["classes"], d["channels"] = list(self.classes), list(self.channels)
        for key, default in (("machine_type", None), ("task", "classify"), ("anomaly", None)):
            if d[key] == default:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, obj: Any) -> Manifest:
        """A manifest from a decoded JSON object; BundleError for anything but one."""
        if not isinstance(obj, dict):
            raise BundleError(f"manifest must be a JSON object, not {_kind(obj)}")
        unknown = set(obj) - set(cls.__dataclass_fields__)
        if unknown:
            raise BundleError(
                f"manifest has unknown field(s) {sorted(unknown)[:8]}; newer trainer? "
                "upgrade pi_edge",
                kind="version",
            )
        missing = [n for n in ("version", "model_sha256", "model_bytes") if n not in obj]
        if missing:
            raise BundleError(f"manifest is missing field(s) {missing}; {_REMAKE}")
        return cls(**obj)


def _no_constant(name: str) -> Any:
    raise BundleError(f"manifest holds {name}, which is not JSON; {_REMAKE}")


def parse_manifest(raw: bytes) -> Manifest:
    """The manifest in `raw` (UTF-8 JSON); only BundleError on any malformed input.

    Call it only on bytes whose signature verified; it does not bound their size itself.
    """
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise BundleError(f"bundle manifest is not UTF-8: {exc}") from None
    except RecursionError:
        raise BundleError("bundle manifest is nested too deeply to be a manifest") from None
    except ValueError as exc:  # JSONDecodeError, and the int digit limit
        raise BundleError(f"bundle manifest is not valid JSON: {str(exc)[:200]}") from None
    return Manifest.from_dict(obj)
