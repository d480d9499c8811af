"""`reissue`: the fleet-wide rollback re-signs an old model as a new, higher version.

Pis refuse a bundle older than the newest they accepted, so re-publishing an old file cannot roll
a fleet back; re-issuing it can. No TensorFlow: the bundle holds placeholder model bytes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from jetson_trainer.__main__ import main
from jetson_trainer.build.keys import generate_keypair, load_private_key
from nodekit.cli import EXIT_REFUSED, EXIT_USAGE
from protocol import Manifest, decode_bundle, encode_bundle, load_public_key

MODEL = b"TFL3" + bytes(range(200))


@pytest.fixture
def old(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(v3 bundle made for site plant-a/v1 with a model.keras beside it, private, public)."""
    private, public = generate_keypair(tmp_path / "keys")
    manifest = Manifest(
        version=3,
        parent=2,
        site="plant-a/v1",
        model_sha256=hashlib.sha256(MODEL).hexdigest(),
        model_bytes=len(MODEL),
        normalisation={"mean": [0.0] * 4, "std": [1.0] * 4},
        extra={"labels_used": 48},
    )
    (tmp_path / "v3").mkdir()
    path = tmp_path / "v3" / "model.bundle"
    path.write_bytes(encode_bundle(manifest, MODEL, load_private_key(private).sign))
    (tmp_path / "v3" / "model.keras").write_bytes(b"keras placeholder")
    return path, private, public


def _argv(old: tuple[Path, Path, Path], out: Path, version: int) -> list[str]:
    path, private, public = old
    return [
        "reissue",
        "--model",
        str(path),
        "--version",
        str(version),
        "--private-key",
        str(private),
        "--public-key",
        str(public),
        "--out",
        str(out),
    ]


def test_reissue_signs_the_old_model_as_a_new_version(
    old: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "v6"
    assert main(_argv(old, out, 6)) == 0
    new = decode_bundle((out / "model.bundle").read_bytes(), load_public_key(old[2]))
    before = decode_bundle(old[0].read_bytes(), load_public_key(old[2]))
    assert new.signed and new.model == MODEL
    assert (new.manifest.version, new.manifest.site) == (6, "plant-a/v1")
    assert new.manifest.extra == {"labels_used": 48, "reissue_of": 3}
    assert new.manifest.normalisation == before.manifest.normalisation
    assert (out / "model.keras").read_bytes() == b"keras placeholder"


def test_reissue_can_bind_the_model_to_another_site(
    old: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    assert main([*_argv(old, tmp_path / "o", 4), "--prefix", "plant-b/v1"]) == 0
    data = (tmp_path / "o" / "model.bundle").read_bytes()
    assert decode_bundle(data, load_public_key(old[2])).manifest.site == "plant-b/v1"


@pytest.mark.parametrize("version", [1, 3])
def test_reissue_never_goes_down(
    old: tuple[Path, Path, Path], tmp_path: Path, version: int
) -> None:
    assert main(_argv(old, tmp_path / "o", version)) == EXIT_USAGE
    assert not (tmp_path / "o" / "model.bundle").exists()


def test_reissue_refuses_a_bundle_that_does_not_verify(
    old: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, other = generate_keypair(tmp_path / "other")
    argv = _argv(old, tmp_path / "o", 9)
    argv[argv.index("--public-key") + 1] = str(other)
    assert main(argv) == EXIT_REFUSED


def test_a_first_model_trained_later_gets_the_next_version_not_v1(tmp_path: Path) -> None:
    from jetson_trainer.daemon.champion import next_version

    assert next_version(tmp_path) == 1
    for name in ("v0001", "v0007", "vbad", "notes"):
        (tmp_path / name).mkdir()
    (tmp_path / "v0009").write_text("a file, not a version directory")
    assert next_version(tmp_path) == 8
