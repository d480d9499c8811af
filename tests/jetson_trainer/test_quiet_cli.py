"""Commands that do not train never import TensorFlow (proved in a fresh interpreter, no timing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import Trained

_NO_TF = """
heavy = sorted(n for n in ("tensorflow", "keras") if n in sys.modules)
assert not heavy, f"imported {heavy}"
"""


def _run(code: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )


def test_help_serve_parsing_and_keygen_do_not_import_tensorflow(tmp_path: Path) -> None:
    code = (
        """
import contextlib, io, sys
import jetson_trainer, jetson_trainer.__main__ as m
with contextlib.redirect_stdout(io.StringIO()):
    for argv in (["--help"], ["serve", "--help"], ["publish", "--help"], ["train", "--help"]):
        try:
            m.main(argv)
        except SystemExit as exc:
            assert exc.code == 0, exc.code
args = m._parser().parse_args(
    ["serve", "--store", sys.argv[1], "--private-key", sys.argv[2], "--epochs", "3"]
)
config = m._settings(args, m.ServeConfig)
assert config.retrain.epochs == 3 and config.policy.labels_needed == 48
import jetson_trainer.daemon.serve, jetson_trainer.api
assert m.main(["keygen", "--out", sys.argv[1]]) == 0
"""
        + _NO_TF
    )
    done = _run(code, str(tmp_path / "keys"), str(tmp_path / "k.pem"))
    assert done.returncode == 0, done.stderr
    assert "oneDNN" not in done.stderr and "cuda" not in done.stderr.lower()


def test_evaluate_runs_litert_without_tensorflow(trained: Trained) -> None:
    code = (
        """
import contextlib, io, sys
import jetson_trainer.__main__ as m
with contextlib.redirect_stdout(io.StringIO()):
    rc = m.main(["evaluate", "--model", sys.argv[1], "--data", sys.argv[2],
                 "--public-key", sys.argv[3], "--json"])
assert rc == 0, rc
"""
        + _NO_TF
    )
    done = _run(code, str(trained.bundle), str(trained.data), str(trained.public_key))
    assert done.returncode == 0, done.stderr


def test_the_api_loads_lazily() -> None:
    code = (
        """
import sys
import jetson_trainer
assert callable(jetson_trainer.build_bundle) and callable(jetson_trainer.generate_keypair)
assert callable(jetson_trainer.finetune_model)
"""
        + _NO_TF
    )
    done = _run(code)
    assert done.returncode == 0, done.stderr
