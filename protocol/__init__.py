"""edgeloop's wire contract: topics, vocabulary, window codec, messages, control, model bundle.

Stdlib + numpy only at import (verifying a bundle loads OpenSSL's Ed25519); the full byte-level
spec is protocol/README.md.
"""

from ._version import __version__
from .bundle import Bundle, Manifest, decode_bundle, encode_bundle, load_public_key
from .control import DRIFT_MODES, Command
from .drift_batch import REASONS, DriftBatch, Kept, decode_batch, encode_batch, window_id
from .errors import BundleError, ConfigError, EdgeloopError, PayloadError, SignatureError
from .messages import Prediction, Status
from .schema import (
    CHANNELS,
    CLASSES,
    NUM_CHANNELS,
    NUM_CLASSES,
    PROTOCOL_VERSION,
    UNITS,
    WINDOW_LENGTH,
    class_index,
)
from .topics import DEFAULT_PREFIX, Topics, check_id
from .window import Window, decode_any, decode_window, decode_window_json, encode_window

__all__ = [
    "CHANNELS",
    "CLASSES",
    "DEFAULT_PREFIX",
    "DRIFT_MODES",
    "NUM_CHANNELS",
    "NUM_CLASSES",
    "PROTOCOL_VERSION",
    "REASONS",
    "UNITS",
    "WINDOW_LENGTH",
    "Bundle",
    "BundleError",
    "Command",
    "ConfigError",
    "DriftBatch",
    "EdgeloopError",
    "Kept",
    "Manifest",
    "PayloadError",
    "Prediction",
    "SignatureError",
    "Status",
    "Topics",
    "Window",
    "__version__",
    "check_id",
    "class_index",
    "decode_any",
    "decode_batch",
    "decode_bundle",
    "decode_window",
    "decode_window_json",
    "encode_batch",
    "encode_bundle",
    "encode_window",
    "load_public_key",
    "window_id",
]
