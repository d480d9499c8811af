"""Key ids, key-rotation records, the key log and trust sets (protocol/keys.py), pure.

The chain A → B → C as a node walks it; each attack of issue 23 item 7 as a refusal with its
kind (a record not signed by a trusted key, a revoked key's record, a replayed older log, a
record for another site, a forged proof, a tampered body); bundles verified with any trusted
key and a revoked key's refused as `revoked`; trust.json round trip and refusals. Then fuzzing
like the other decoders: 10,000 generated payloads per decoder (random bytes, mutations of a
valid log, records with wrong JSON bodies validly signed), only PayloadError, ≤ 50 ms of CPU.
"""

from __future__ import annotations

import gc
import hashlib
import json
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import BundleError, Manifest, PayloadError, SignatureError, encode_bundle
from protocol.bundle import load_public_keys
from protocol.keys import (
    LOG_HEAD,
    MAX_LOG_RECORDS,
    MAX_REVOKED,
    MAX_TRUSTED,
    RECORD_HEAD,
    KeyRecord,
    TrustSet,
    decode_log,
    decode_record,
    encode_log,
    key_id,
    make_record,
    raw_public_key,
)

SITE = "plant-a/v1"
KEYS = [Ed25519PrivateKey.from_private_bytes(bytes([i]) * 32) for i in range(1, 8)]
A, B, C, D, E, F, X = KEYS
PUB = {k: raw_public_key(k) for k in KEYS}
MODEL = b"TFL3" + bytes(range(64))
MAX_CPU_S = 0.050


def rec(signer: Any, new: Any, seq: int, **kw: Any) -> bytes:
    return make_record(signer, new, site=kw.pop("site", SITE), seq=seq, created=1.7e9, **kw)


def bundle(key: Any, version: int = 2) -> bytes:
    m = Manifest(
        version=version,
        site=SITE,
        model_sha256=hashlib.sha256(MODEL).hexdigest(),
        model_bytes=len(MODEL),
    )
    return encode_bundle(m, MODEL, key.sign)


AB = rec(A, B, 1)  # A announces B and revokes itself
BC = rec(B, C, 2)
ONLY_A = TrustSet.of([PUB[A]])


def test_key_id_is_the_hash_of_the_raw_key() -> None:
    assert key_id(PUB[A]) == hashlib.sha256(PUB[A]).hexdigest()[:32]
    assert len({key_id(p) for p in PUB.values()}) == len(KEYS)


def test_a_record_round_trips_with_its_fields_and_proof() -> None:
    r = decode_record(AB)
    assert (r.site, r.seq, r.signer, r.key, r.revoke) == (
        SITE,
        1,
        key_id(PUB[A]),
        PUB[B],
        (key_id(PUB[A]),),
    )
    assert r.raw == AB and len(AB) == RECORD_HEAD.size + len(r.body()) + 128
    keep = decode_record(rec(A, B, 1, revoke_signer=False))
    assert keep.revoke == ()


def test_the_chain_a_b_c_revokes_each_old_key() -> None:
    trust, applied = ONLY_A.apply_log(encode_log([AB, BC]), SITE)
    assert [r.seq for r in applied] == [1, 2]
    assert trust.keys == (PUB[C],) and trust.seq == 2
    assert trust.is_revoked(key_id(PUB[A])) and trust.is_revoked(key_id(PUB[B]))
    assert trust.last == hashlib.sha256(BC).hexdigest()
    # a node that applied seq 1 earlier applies only seq 2 of the same log
    after_ab, _ = ONLY_A.apply_log(encode_log([AB]), SITE)
    assert [r.seq for r in after_ab.apply_log(encode_log([AB, BC]), SITE)[1]] == [2]


def test_bundles_verify_with_any_trusted_key_and_a_revoked_keys_are_refused_as_revoked() -> None:
    both, _ = ONLY_A.apply_log(encode_log([rec(A, B, 1, revoke_signer=False)]), SITE)
    assert set(both.keys) == {PUB[A], PUB[B]}
    assert both.decode_bundle(bundle(A)).manifest.version == 2
    assert both.decode_bundle(bundle(B)).manifest.version == 2
    only_b, _ = ONLY_A.apply_log(encode_log([AB]), SITE)
    assert only_b.decode_bundle(bundle(B)).signed
    with pytest.raises(BundleError) as refused:
        only_b.decode_bundle(bundle(A))
    assert refused.value.kind == "revoked" and key_id(PUB[A]) in str(refused.value)
    with pytest.raises(SignatureError):  # never trusted: an ordinary signature failure
        only_b.decode_bundle(bundle(X))


@pytest.mark.parametrize(
    ("log", "kind"),
    [
        pytest.param(lambda: encode_log([rec(X, B, 1)]), "untrusted", id="signed-by-a-stranger"),
        pytest.param(lambda: encode_log([rec(A, B, 1, site="plant-b/v1")]), "site", id="site"),
        pytest.param(lambda: encode_log([rec(A, C, 2)]), "revoked", id="old-key-after-b"),
        pytest.param(lambda: encode_log([rec(B, A, 2)]), "bad_field", id="re-add-revoked-key"),
        pytest.param(lambda: encode_log([rec(B, C, 3)]), "gap", id="gap"),
        pytest.param(lambda: encode_log([rec(A, C, 1)]), "revoked", id="other-record-same-seq"),
    ],
)
def test_attacks_on_a_node_that_applied_a_to_b_are_refused(
    log: Callable[[], bytes], kind: str
) -> None:
    after_ab, _ = ONLY_A.apply_log(encode_log([AB]), SITE)
    with pytest.raises(PayloadError) as refused:
        after_ab.apply_log(log(), SITE)
    assert refused.value.kind == kind, refused.value


def test_another_record_of_the_same_seq_by_a_trusted_key_is_a_conflict() -> None:
    kept, _ = ONLY_A.apply_log(encode_log([rec(A, B, 1, revoke_signer=False)]), SITE)
    with pytest.raises(PayloadError) as refused:
        kept.apply_log(encode_log([rec(A, C, 1, revoke_signer=False)]), SITE)
    assert refused.value.kind == "conflict"


def test_a_replayed_older_log_is_refused_after_a_newer_one() -> None:
    after_bc, _ = ONLY_A.apply_log(encode_log([AB, BC]), SITE)
    with pytest.raises(PayloadError) as refused:
        after_bc.apply_log(encode_log([AB]), SITE)
    assert refused.value.kind == "replay"
    assert after_bc.apply_log(encode_log([AB, BC]), SITE)[1] == []  # the same log: nothing


def test_a_revoked_keys_record_is_refused_as_revoked() -> None:
    after_ab, _ = ONLY_A.apply_log(encode_log([AB]), SITE)
    with pytest.raises(PayloadError) as refused:
        after_ab.apply_log(encode_log([AB, rec(A, C, 2)]), SITE)
    assert refused.value.kind == "revoked"


def test_forged_proof_signature_and_tampered_body_are_refused() -> None:
    record = KeyRecord(SITE, 1, 1.7e9, key_id(PUB[A]), PUB[B], (key_id(PUB[A]),))
    no_proof = record.encode(A.sign, X.sign)  # the "new key" never signed: no proof
    with pytest.raises(PayloadError) as refused:
        decode_record(no_proof)
    assert refused.value.kind == "bad_signature"
    bad_sig = record.encode(X.sign, B.sign)  # names A as its signer, signed by X
    with pytest.raises(PayloadError) as refused:
        ONLY_A.apply_log(encode_log([bad_sig]), SITE)
    assert refused.value.kind == "bad_signature"
    tampered = AB.replace(b'"seq":1', b'"seq":2')
    with pytest.raises(PayloadError):
        ONLY_A.apply_log(encode_log([tampered]), SITE)
    spaced = AB.replace(b'"seq":1,', b'"seq": 1,')  # not canonical: the signed bytes differ
    with pytest.raises(PayloadError):
        decode_record(spaced)


def test_a_node_installed_with_a_newer_key_starts_at_the_first_record_it_can_check() -> None:
    only_c = TrustSet.of([PUB[C]])
    trust, applied = only_c.apply_log(encode_log([AB, BC, rec(C, D, 3)]), SITE)
    assert [r.seq for r in applied] == [3] and trust.keys == (PUB[D],)
    with pytest.raises(PayloadError) as refused:  # but a log it can check nothing of: refused
        only_c.apply_log(encode_log([AB, BC]), SITE)
    assert refused.value.kind == "untrusted"


def test_limits_trusted_keys_revoked_ids_and_log_length() -> None:
    trust = TrustSet.of([PUB[A]])
    chain = [rec(A, B, 1, revoke_signer=False), rec(A, C, 2, revoke_signer=False)]
    chain.append(rec(A, D, 3, revoke_signer=False))
    trust, _ = trust.apply_log(encode_log(chain), SITE)
    assert len(trust.keys) == MAX_TRUSTED
    with pytest.raises(PayloadError, match="at most 4"):
        trust.apply_log(encode_log([*chain, rec(A, E, 4, revoke_signer=False)]), SITE)
    ok, _ = trust.apply_log(encode_log([*chain, rec(A, E, 4)]), SITE)  # revoking A: room
    assert len(ok.keys) == MAX_TRUSTED and ok.is_revoked(key_id(PUB[A]))
    with pytest.raises(ValueError):
        encode_log([])
    assert LOG_HEAD.unpack_from(encode_log([AB] * 20))[2] == MAX_LOG_RECORDS
    revoked = tuple((f"{i:032x}", None) for i in range(MAX_REVOKED))
    many = TrustSet((PUB[A],), revoked)
    after, _ = many.apply_log(encode_log([AB]), SITE)
    assert len(after.revoked) == MAX_REVOKED and after.revoked[-1][0] == key_id(PUB[A])


def test_trust_json_round_trips_and_refuses_another_site_and_damage() -> None:
    trust, _ = ONLY_A.apply_log(encode_log([AB, BC]), SITE)
    data = trust.to_json(SITE)
    assert TrustSet.from_json(data, SITE) == trust
    with pytest.raises(PayloadError, match="site"):
        TrustSet.from_json(data, "plant-b/v1")
    obj = json.loads(data)
    for broken in (
        {**obj, "v": 2},
        {**obj, "keys": []},
        {**obj, "keys": [obj["revoked"][0]["key"]]},  # a revoked key trusted
        {**obj, "revoked": [{"id": obj["revoked"][0]["id"], "key": PUB[X].hex()}]},
        {**obj, "extra": 1},
    ):
        with pytest.raises(PayloadError):
            TrustSet.from_json(json.dumps(broken).encode(), SITE)
    with pytest.raises(PayloadError):
        TrustSet.from_json(data[:-5], SITE)


def test_configured_keys_join_the_trust_set_unless_revoked() -> None:
    trust, _ = ONLY_A.apply_log(encode_log([AB]), SITE)
    merged, skipped = trust.with_keys([PUB[A], PUB[E]])
    assert skipped == [key_id(PUB[A])] and merged.keys == (PUB[B], PUB[E])


def _pem(key: Any) -> bytes:
    pem: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem


def test_a_trust_file_holds_one_to_four_pem_keys(tmp_path: Path) -> None:
    path = tmp_path / "trust.pem"
    path.write_bytes(_pem(A))
    assert load_public_keys(path) == (PUB[A],)
    path.write_bytes(_pem(A) + _pem(B))
    assert load_public_keys(path) == (PUB[A], PUB[B])
    for bad in (_pem(A) + _pem(A), b"".join(_pem(k) for k in KEYS[:5])):
        path.write_bytes(bad)
        with pytest.raises(BundleError) as refused:
            load_public_keys(path)
        assert refused.value.kind == "key"


# ---------------------------------------------------------------- fuzzing

FUZZ = settings(
    max_examples=10_000,
    deadline=timedelta(milliseconds=250),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
VALID_LOG = encode_log([AB, BC])
AFTER_AB = ONLY_A.apply_log(encode_log([AB]), SITE)[0]
SLOWEST: dict[str, float] = {}


def only_payload_errors(name: str, decode: Callable[[], object]) -> None:
    gc.disable()
    start = time.thread_time()
    try:
        decode()
    except PayloadError as exc:
        assert isinstance(exc.kind, str) and str(exc)
    finally:
        spent = time.thread_time() - start
        gc.enable()
    SLOWEST[name] = max(SLOWEST.get(name, 0.0), spent)
    assert spent <= MAX_CPU_S, f"{name} spent {spent * 1e3:.1f} ms CPU"


def _json_value() -> st.SearchStrategy[Any]:
    leaf = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=80),
        st.sampled_from([key_id(PUB[A]), PUB[B].hex(), SITE, "0" * 32, "f" * 64]),
    )
    return st.recursive(leaf, lambda inner: st.lists(inner, max_size=4), max_leaves=12)


def _signed_body(obj: Any) -> bytes:
    body = json.dumps(obj, separators=(",", ":"), allow_nan=True).encode()[:1024]
    part = RECORD_HEAD.pack(b"EK", 1, 0, len(body)) + body
    return part + A.sign(part) + B.sign(part)


GOOD_BODY = json.loads(decode_record(AB).body())


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    family = draw(st.integers(0, 3))
    if family == 0:  # random bytes, half behind a valid log header
        raw = draw(st.binary(max_size=400))
        return (
            (LOG_HEAD.pack(b"EL", 1, draw(st.integers(0, 255))) + raw)
            if draw(st.booleans())
            else raw
        )
    if family == 1:  # mutations of a valid log
        data = bytearray(VALID_LOG)
        for _ in range(draw(st.integers(1, 4))):
            op = draw(st.integers(0, 2))
            at = draw(st.integers(0, len(data) - 1))
            if op == 0:
                data[at] ^= 1 << draw(st.integers(0, 7))
            elif op == 1:
                del data[at : at + draw(st.integers(1, 40))]
            else:
                data[at:at] = draw(st.binary(min_size=1, max_size=8))
            if not data:
                break
        return bytes(data)
    body = dict(GOOD_BODY)
    if family == 2:  # one field replaced by any JSON value, signed validly
        body[draw(st.sampled_from(sorted(GOOD_BODY)))] = draw(_json_value())
    elif draw(st.booleans()):  # a field dropped
        body.pop(draw(st.sampled_from(sorted(GOOD_BODY))))
    else:  # a field added
        body[draw(st.text(max_size=8))] = draw(_json_value())
    return LOG_HEAD.pack(b"EL", 1, 1) + _signed_body(body)


@FUZZ
@given(payloads())
def test_fuzz_key_log_decoders_raise_only_payload_errors(data: bytes) -> None:
    only_payload_errors("decode_log", lambda: decode_log(data))
    only_payload_errors("apply_log", lambda: AFTER_AB.apply_log(data, SITE))
    only_payload_errors("decode_record", lambda: decode_record(data[LOG_HEAD.size :]))


@settings(max_examples=3000, deadline=None, database=None)
@given(st.binary(max_size=2000))
def test_fuzz_trust_json_raises_only_payload_errors(data: bytes) -> None:
    only_payload_errors("trust.json", lambda: TrustSet.from_json(data, SITE))


def test_a_full_log_applies_within_budget() -> None:
    """The worst log a node accepts: 16 records (each two signatures to check)."""
    keys = [Ed25519PrivateKey.from_private_bytes(bytes([i + 40]) * 32) for i in range(17)]
    chain = [rec(keys[i], keys[i + 1], i + 1) for i in range(16)]
    log = encode_log(chain)
    trust = TrustSet.of([raw_public_key(keys[0])])
    start = time.thread_time()
    new, applied = trust.apply_log(log, SITE)
    spent = time.thread_time() - start
    assert len(applied) == 16 and new.keys == (raw_public_key(keys[16]),)
    print(f"[keys] a 16-record log ({len(log)} bytes) applies in {spent * 1e3:.1f} ms CPU")
    for name, worst in sorted(SLOWEST.items()):  # filled by the fuzz tests above, if they ran
        print(f"[keys] fuzz: {name} took at most {worst * 1e3:.2f} ms CPU on one payload")
