"""Fuzzing model bundles: every stage a node runs before it builds an interpreter refuses any
input with the bundle's own typed errors, within 50 ms of CPU.

12,000 generated payloads in three families go through `protocol.decode_bundle` (with the
trainer's key, and unverified as a development node reads them) and pi_edge's pre-interpreter
stages (`verify_bundle`, `check_site`, `check_not_replayed`, `Expected.check`):

- 3,000 random byte strings, half behind a valid magic and version;
- 4,000 mutations of a valid signed bundle: flipped, cut and inserted bytes, rewritten header
  fields (lengths, flags, version);
- 5,000 validly signed bundles whose manifest is wrong: a field replaced by any JSON value
  (wrong types, 400- and 5000-digit numbers, NaN, deep nesting), a field dropped, an unknown
  field, or bytes that are not JSON at all.

Only BundleError (SignatureError included) may come out of protocol, only ModelError out of
pi_edge; anything else, or more than 50 ms of CPU on one payload, fails.
"""

from __future__ import annotations

import gc
import hashlib
import json
import struct
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pi_edge.errors import ModelError
from pi_edge.model.vetting import Expected, check_not_replayed, check_site, verify_bundle
from protocol import CHANNELS, CLASSES, BundleError, Manifest, decode_bundle, encode_bundle
from protocol.bundle import HEADER

MAX_CPU_S = 0.050
SITE = "plant-a/v1"
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))  # a fixed test key
PUBLIC = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
MODEL = b"TFL3" + bytes(range(256)) * 2
EXPECTED = Expected(CLASSES, CHANNELS, 60)
GOOD = Manifest(
    version=3,
    parent=2,
    site=SITE,
    model_sha256=hashlib.sha256(MODEL).hexdigest(),
    model_bytes=len(MODEL),
    normalisation={"mean": [50.0, 0.3, 11.0, 125.0], "std": [5.0, 0.1, 0.5, 10.0]},
    metrics={"accuracy": 0.9, "mean_confidence": 0.8},
    golden=[{"x": [[0.0] * 4] * 60, "probs": [1.0, 0.0, 0.0, 0.0]}],
).to_dict()
VALID = encode_bundle(Manifest.from_dict(GOOD), MODEL, KEY.sign)
SLOWEST: dict[str, float] = {}


def fuzz(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=timedelta(milliseconds=500),  # wall clock, for a loaded 2-core machine
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def typed_only(name: str, stage: Callable[[], object], allowed: type[Exception]) -> None:
    """Run one stage: `allowed` is fine, anything else fails, as does > 50 ms of CPU.

    The cyclic garbage collector is paused meanwhile: its full collections walk hypothesis's
    ever-growing heap (measured: 40 → 500 ms over a run) and would be billed to whichever
    payload happened to trigger them, not to the decoder.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    start = time.thread_time()
    try:
        stage()
    except allowed as exc:
        assert str(exc) and isinstance(getattr(exc, "kind", ""), str)
    finally:
        spent = time.thread_time() - start
        if was_enabled:
            gc.enable()
    SLOWEST[name] = max(SLOWEST.get(name, 0.0), spent)
    assert spent <= MAX_CPU_S, f"{name} spent {spent * 1e3:.1f} ms CPU on one payload"


def node_stages(data: bytes, public_key: bytes | None) -> None:
    """What ModelManager runs on a bundle from MQTT before it builds an interpreter."""
    bundle = verify_bundle(data, public_key=public_key, allow_unsigned=public_key is None)
    check_site(bundle.manifest, SITE)
    check_not_replayed(bundle.manifest, 2)
    EXPECTED.check(bundle.manifest)


def all_stages(data: bytes) -> None:
    """Every stage, with the key and as an unverified development node."""
    typed_only("decode (key)", lambda: decode_bundle(data, PUBLIC), BundleError)
    typed_only("decode (dev)", lambda: decode_bundle(data, None, allow_unsigned=True), BundleError)
    typed_only("node (key)", lambda: node_stages(data, PUBLIC), ModelError)
    typed_only("node (dev)", lambda: node_stages(data, None), ModelError)


def test_the_valid_bundle_passes_every_stage() -> None:
    node_stages(VALID, PUBLIC)
    node_stages(VALID, None)
    assert decode_bundle(VALID, PUBLIC).manifest.version == 3


# ------------------------------------------------------------------------- random bytes


@fuzz(3000)
@given(body=st.binary(max_size=2048), framed=st.booleans(), signed=st.booleans())
def test_random_bytes(body: bytes, framed: bool, signed: bool) -> None:
    if framed:
        m_len = min(len(body), 600)
        s_len = 64 if signed else 0
        n_len = max(0, len(body) - m_len - s_len)
        body = HEADER.pack(b"EB", 1, int(signed), m_len, n_len, s_len) + body
    all_stages(body)


# ------------------------------------------------------------ mutations of a valid bundle

edits = st.lists(
    st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255), st.sampled_from("xid")),
    min_size=1,
    max_size=8,
)
header_fields = st.fixed_dictionaries(
    {},
    optional={
        "version": st.integers(0, 255),
        "flags": st.integers(0, 255),
        "m_len": st.integers(0, 2**32 - 1) | st.integers(0, len(VALID)),
        "n_len": st.integers(0, 2**32 - 1) | st.integers(0, len(VALID)),
        "s_len": st.integers(0, 2**16 - 1) | st.sampled_from([0, 63, 64, 65]),
    },
)


@fuzz(4000)
@given(changes=edits, header=header_fields, cut=st.none() | st.integers(0, len(VALID)))
def test_mutations_of_a_valid_bundle(
    changes: list[tuple[int, int, str]], header: dict[str, int], cut: int | None
) -> None:
    data = bytearray(VALID)
    for where, byte, op in changes:
        pos = where % max(1, len(data))
        if op == "x":
            data[pos] ^= byte or 1
        elif op == "i":
            data[pos:pos] = bytes([byte])
        elif len(data) > 1:
            del data[pos]
    if header and len(data) >= HEADER.size:
        magic, version, flags, m_len, n_len, s_len = HEADER.unpack_from(data)
        v = {"version": version, "flags": flags, "m_len": m_len, "n_len": n_len, "s_len": s_len}
        v.update(header)
        struct.pack_into(
            "<2sBBIIH", data, 0, magic, v["version"], v["flags"], v["m_len"], v["n_len"], v["s_len"]
        )
    if cut is not None:
        del data[cut:]
    all_stages(bytes(data))


# ------------------------------------------ validly signed bundles with a wrong manifest

huge_numbers = st.sampled_from(
    [10**400, -(10**400), 2**63 + 1, 2**31, 10**4000, -1, 0, 1e308, -1e308, 5e-324]
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    huge_numbers,
    st.floats(),  # json.dumps writes NaN and Infinity for the non-finite ones
    st.text(max_size=12),
    st.sampled_from(["", "plant-b/v1", "edgeloop/v1", "#", "/x", "a" * 300, "normal"]),
)
json_values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=24,
)
FIELDS = sorted(GOOD)


def _text(value: Any) -> bytes:
    return json.dumps(value).encode()


manifests = st.one_of(
    # one field replaced by any JSON value
    st.tuples(st.sampled_from(FIELDS), json_values).map(lambda fv: _text({**GOOD, fv[0]: fv[1]})),
    # a field inside normalisation / golden / train_stats replaced
    st.tuples(st.sampled_from(["mean", "std"]), json_values).map(
        lambda kv: _text({**GOOD, "normalisation": {**GOOD["normalisation"], kv[0]: kv[1]}})
    ),
    st.tuples(st.sampled_from(["x", "probs"]), json_values).map(
        lambda kv: _text({**GOOD, "golden": [{**GOOD["golden"][0], kv[0]: kv[1]}]})
    ),
    json_values.map(lambda v: _text({**GOOD, "train_stats": {"features": {"per_class": v}}})),
    # a field dropped, an unknown field, a whole wrong document
    st.sampled_from(FIELDS).map(lambda f: _text({k: v for k, v in GOOD.items() if k != f})),
    st.tuples(st.text(max_size=8), json_values).map(lambda kv: _text({**GOOD, kv[0]: kv[1]})),
    json_values.map(_text),
    # numbers json.dumps cannot write, deep nesting, not JSON, not UTF-8
    st.integers(1, 6000).map(
        lambda n: _text(GOOD).replace(b'"version": 3', b'"version": ' + b"9" * n)
    ),
    st.integers(1, 200_000).map(lambda n: b'{"extra": ' + b"[" * n + b"]" * n + b"}"),
    st.binary(max_size=300),
)


@fuzz(5000)
@given(raw=manifests, signed=st.booleans())
def test_validly_signed_bundles_with_a_wrong_manifest(raw: bytes, signed: bool) -> None:
    flags, s_len = (1, 64) if signed else (0, 0)
    body = HEADER.pack(b"EB", 1, flags, len(raw), len(MODEL), s_len) + raw + MODEL
    all_stages(body + KEY.sign(body) if signed else body)
