"""The model registry (pure + its file), the `models` CLI and the model card; no broker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jetson_trainer.__main__ import main
from jetson_trainer.build.model_card import CARD_NAME, model_card
from jetson_trainer.daemon.registry_shell import ModelHistory
from jetson_trainer.daemon.retrain import Attempt, Champion
from jetson_trainer.versions.gate import GateDecision, Scores
from jetson_trainer.versions.registry import (
    MAX_NODES,
    REGISTRY_NAME,
    ModelRecord,
    Registry,
    RegistryFile,
    Rollback,
    format_table,
    parse_registry,
    parse_rollbacks,
)
from nodekit.cli import EXIT_FAILED, EXIT_USAGE
from protocol import CLASSES, Manifest

from .conftest import Trained


def _rb(frm: int, ts: float = 10.0, reason: str = "accuracy 0.41 < 0.90") -> Rollback:
    return Rollback(frm, frm - 1, reason, ts, True)


def _history() -> Registry:
    reg = Registry().upsert(ModelRecord(1, "champion", created=1.0, published=1.0))
    gate = {
        "accepted": True,
        "reason": "more accurate",
        "champion_drift": 0.5,
        "challenger_drift": 0.98,
        "champion_original": 1.0,
        "challenger_original": 0.995,
    }
    reg = reg.add_refused(ModelRecord(2, "refused", parent=1, created=2.0))
    return reg.upsert(
        ModelRecord(
            2,
            "champion",
            parent=1,
            created=3.0,
            published=3.0,
            gate=gate,
            labels={"total": 8, "per_class": {"normal": 2, "bearing_fault": 2}},
            served=("pi-1", "pi-2", "pi-7"),  # nodes seen serving v2: they may roll it back
        )
    )


def test_a_new_champion_retires_the_old_and_a_refused_attempt_keeps_its_own_record() -> None:
    reg = _history()
    assert [(m.version, m.status) for m in reg.records] == [
        (1, "retired"),
        (2, "refused"),
        (2, "champion"),
    ]
    assert reg.get(2) is not None and reg.get(2).status == "champion"  # type: ignore[union-attr]
    assert reg.champion() == 2 and reg.highest() == 2 and reg.highest_offered() == 2


def test_a_rollback_marks_the_version_bad_once_and_bad_is_final() -> None:
    reg, news = _history().mark_bad(_rb(2), "pi-1")
    assert news and reg.bad_versions() == {2}
    again, news_again = reg.mark_bad(_rb(2), "pi-1")  # the same retained status, seen again
    assert not news_again and again == reg
    other, news_other = reg.mark_bad(_rb(2, ts=11.0), "pi-2")
    assert news_other and [b.node for b in other.get(2).bad] == ["pi-1", "pi-2"]  # type: ignore[union-attr]
    # neither a re-upsert nor set_champion can bring it back
    back = other.upsert(ModelRecord(2, "champion")).set_champion(2)
    assert back.get(2).status == "bad" and back.champion() is None  # type: ignore[union-attr]


def test_a_rollback_of_an_unknown_version_creates_no_record() -> None:
    assert Registry().rollback_refusal(_rb(7), "pi-1") == "unknown_version"
    reg, news = Registry().mark_bad(_rb(7), "pi-1")
    assert not news and reg == Registry() and reg.highest() == 0
    huge = Rollback(2**31 - 1, None, "x", 1.0, True)  # the manifest's highest version
    assert _history().mark_bad(huge, "pi-1") == (_history(), False)


def test_a_rollback_needs_a_published_version_the_node_was_seen_serving() -> None:
    reg = _history().upsert(ModelRecord(3, "candidate", parent=2))  # on disk, never published
    assert reg.rollback_refusal(_rb(3), "pi-1") == "not_published"
    assert reg.rollback_refusal(_rb(2), "pi-9") == "not_served"  # never said it served v2
    assert reg.mark_bad(_rb(2), "pi-9") == (reg, False)
    seen = reg.set_deployed("pi-9", 2)  # an earlier status: pi-9 serves v2
    moved = seen.set_deployed("pi-9", 1)  # then it went back to v1
    assert moved.get(2).served[-1] == "pi-9" and moved.get(2).deployed == ()  # type: ignore[union-attr]
    assert moved.rollback_refusal(_rb(2), "pi-9") is None
    assert moved.mark_bad(_rb(2), "pi-9")[1]


def test_one_mark_per_node_and_version_and_node_lists_are_capped() -> None:
    reg, news = _history().mark_bad(_rb(2), "pi-1")
    again, news_again = reg.mark_bad(_rb(2, ts=99.0), "pi-1")  # a duplicate with another ts
    assert news and not news_again and again == reg
    many = _history()
    for n in range(MAX_NODES + 10):
        many = many.set_deployed(f"pi-{n}", 2)
    rec = many.get(2)
    assert rec is not None and len(rec.deployed) == MAX_NODES and len(rec.served) == MAX_NODES
    assert rec.deployed[-1] == f"pi-{MAX_NODES + 9}"  # the newest kept


def test_deployment_follows_each_nodes_latest_status() -> None:
    reg = _history().set_deployed("pi-1", 2).set_deployed("pi-2", 2)
    assert reg.get(2).deployed == ("pi-1", "pi-2")  # type: ignore[union-attr]
    reg = reg.set_deployed("pi-1", 1).set_deployed("pi-2", None)
    assert reg.get(1).deployed == ("pi-1",) and reg.get(2).deployed == ()  # type: ignore[union-attr]
    assert all(not m.deployed for m in reg.records if m.status == "refused")


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ({"to": 1, "reason": "", "ts": 1.0, "auto": True}, "no from"),
        ({"from": True, "to": 1, "reason": "", "ts": 1.0, "auto": True}, "bool from"),
        ({"from": 0, "to": None, "reason": "", "ts": 1.0, "auto": True}, "from 0"),
        ({"from": 3, "to": "2", "reason": "", "ts": 1.0, "auto": True}, "text to"),
        ({"from": 3, "to": 2, "reason": "x" * 201, "ts": 1.0, "auto": True}, "long reason"),
        ({"from": 3, "to": 2, "reason": "", "ts": float("nan"), "auto": True}, "nan ts"),
        ({"from": 3, "to": 2, "reason": "", "ts": 1.0, "auto": 1}, "int auto"),
        ({"from": 2**40, "to": 2, "reason": "", "ts": 1.0, "auto": True}, "huge from"),
        ("rollback", "not an object"),
    ],
)
def test_a_malformed_rollback_entry_is_counted_and_ignored(entry: object, why: str) -> None:
    good = {"from": 3, "to": 2, "reason": "ood 0.4", "ts": 5.0, "auto": False}
    got, bad = parse_rollbacks({"rollbacks": [entry, good]})
    assert bad == 1, why
    assert [(r.from_version, r.to, r.reason, r.auto) for r in got] == [(3, 2, "ood 0.4", False)]


def test_only_the_newest_eight_rollbacks_are_read() -> None:
    entries = [
        {"from": v, "to": v - 1, "reason": "", "ts": float(v), "auto": True} for v in range(2, 12)
    ]
    got, bad = parse_rollbacks({"rollbacks": entries})
    assert [r.from_version for r in got] == list(range(4, 12)) and bad == 2


def test_the_file_survives_a_restart_and_is_appended_one_line_per_change(tmp_path: Path) -> None:
    path = tmp_path / REGISTRY_NAME
    RegistryFile(path).update(lambda r: _history().mark_bad(_rb(2), "pi-1")[0])
    again = RegistryFile(path)
    assert again.refused == [] and again.view().bad_versions() == {2}
    assert [json.loads(line)["version"] for line in path.read_text().splitlines()] == [1, 2, 2]
    assert not path.with_name(REGISTRY_NAME + ".tmp").exists()
    size = path.stat().st_size
    again.update(lambda r: r.set_deployed("pi-3", 1))  # one record changed: one line appended
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and path.stat().st_size == size + len(lines[-1]) + 1
    assert json.loads(lines[-1])["deployed"] == ["pi-3"]
    again.update(lambda r: r.set_deployed("pi-3", 1))  # nothing changed: nothing written
    assert len(path.read_text().splitlines()) == 4
    assert RegistryFile(path).view() == again.view()  # replayed on load


def test_the_file_is_compacted_when_its_lines_outgrow_its_records(tmp_path: Path) -> None:
    path = tmp_path / REGISTRY_NAME
    reg = RegistryFile(path)
    reg.update(lambda r: _history())
    for n in range(200):  # a node flapping between v1 and v2
        reg.update(lambda r, n=n: r.set_deployed("pi-1", 1 + n % 2))
    assert reg.compactions >= 1 and reg.lines <= 4 * 3 + 64
    assert len(path.read_text().splitlines()) == reg.lines
    assert RegistryFile(path).view() == reg.view()


def test_a_torn_last_line_is_refused_and_the_next_append_starts_a_new_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / REGISTRY_NAME
    RegistryFile(path).update(lambda r: _history())
    with path.open("a") as fh:
        fh.write('{"v":1,"version":')  # a crash mid-append
    reg = RegistryFile(path)
    assert len(reg.refused) == 1 and reg.view() == _history()
    reg.update(lambda r: r.set_deployed("pi-1", 1))
    again = RegistryFile(path)  # compacted after the damage (copied aside first)
    assert again.refused == [] and again.view() == reg.view()
    assert list(tmp_path.glob(REGISTRY_NAME + ".corrupt-*"))


def test_a_file_with_a_version_beyond_the_manifest_range_refuses_that_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / REGISTRY_NAME
    RegistryFile(path).update(lambda r: _history())
    line = json.dumps({"v": 1, **ModelRecord(2**31 - 1, "champion").to_dict()})
    with path.open("a") as fh:
        fh.write(line.replace(str(2**31 - 1), str(2**32 - 1)) + "\n")  # an attacked old file
    reg = RegistryFile(path)
    assert len(reg.refused) == 1 and reg.view().highest() == 2


def test_damaged_lines_are_refused_the_rest_kept_and_the_file_copied_aside(
    tmp_path: Path,
) -> None:
    path = tmp_path / REGISTRY_NAME
    RegistryFile(path).update(lambda r: _history())
    lines = path.read_text().splitlines()
    # a torn last line (crash mid-write) and a hand edit with an unknown key
    edited = json.loads(lines[0]) | {"colour": "red"}
    path.write_text("\n".join([json.dumps(edited), lines[1], lines[2][:30]]) + "\n")
    reg_file = RegistryFile(path)
    assert reg_file.refused == ["line 1: unknown keys ['colour']", "line 3: not JSON"]
    assert [(m.version, m.status) for m in reg_file.view().records] == [(2, "refused")]
    reg_file.update(lambda r: r.upsert(ModelRecord(3, "champion")))
    (aside,) = tmp_path.glob(REGISTRY_NAME + ".corrupt-*")
    assert "colour" in aside.read_text()
    assert parse_registry(path.read_text())[1] == []


def test_format_table_shows_status_labels_gate_and_deployment() -> None:
    reg, _ = _history().set_deployed("pi-1", 1).mark_bad(_rb(2), "pi-7")
    lines = format_table(reg).splitlines()
    assert lines[0].split() == [
        "version",
        "parent",
        "created",
        "status",
        "labels",
        "gate",
        "deployed",
        "on",
    ]
    assert lines[1].startswith("v1 ") and lines[1].rstrip().endswith("pi-1")
    assert "refused" in lines[2]
    assert "bad (pi-7: accuracy 0.41 < 0.90)" in lines[3]
    assert "drift 0.500→0.980 orig 1.000→0.995" in lines[3] and "2/2" in lines[3]


def _store_with_history(tmp_path: Path) -> Path:
    store = tmp_path / "trainer"
    RegistryFile(store / REGISTRY_NAME).update(
        lambda r: _history().mark_bad(_rb(2), "pi-7")[0].set_deployed("pi-1", 1)
    )
    return store


def test_models_cli_lists_the_history_as_a_table_and_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _store_with_history(tmp_path)
    assert main(["models", "--state-dir", str(store)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["version", "v1", "v2", "v2"]
    assert main(["models", "--state-dir", str(store), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [(r["version"], r["status"]) for r in records] == [
        (1, "retired"),
        (2, "refused"),
        (2, "bad"),
    ]
    assert records[0]["deployed"] == ["pi-1"] and records[2]["bad"][0]["node"] == "pi-7"


def test_models_cli_without_a_state_dir_says_what_to_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDGELOOP_STORE", raising=False)
    assert main(["models"]) == EXIT_USAGE
    assert main(["models", "--state-dir", str(tmp_path / "nowhere")]) == EXIT_FAILED
    monkeypatch.setenv("EDGELOOP_STORE", str(_store_with_history(tmp_path)))
    assert main(["models", "--json"]) == 0


def test_models_cli_does_not_import_tensorflow(tmp_path: Path) -> None:
    store = _store_with_history(tmp_path)
    code = """
import contextlib, io, sys
import jetson_trainer.__main__ as m
with contextlib.redirect_stdout(io.StringIO()) as out:
    for argv in (["models", "--help"],):
        try:
            m.main(argv)
        except SystemExit as exc:
            assert exc.code == 0, exc.code
    assert m.main(["models", "--state-dir", sys.argv[1]]) == 0
assert "pi-7" in out.getvalue()
heavy = sorted(n for n in ("tensorflow", "keras") if n in sys.modules)
assert not heavy, f"imported {heavy}"
"""
    done = subprocess.run(
        [sys.executable, "-c", code, str(store)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr


def test_model_card_names_version_parent_data_labels_gate_and_bad_marks() -> None:
    reg, _ = _history().mark_bad(_rb(2), "pi-7")
    rec = reg.get(2)
    assert rec is not None
    manifest = {
        "version": 2,
        "parent": 1,
        "quantization": "int8",
        "site": "edgeloop/v1",
        "train_stats": {"n_windows": 1008},
        "metrics": {"n": 40, "accuracy": 0.975},
        "extra": {"train_stats_source": "8 new + 1000 replay windows"},
    }
    card = model_card(manifest, None, rec.to_dict())
    assert card.startswith("# Model card: v2\n")
    for needle in (
        "| parent | v1 |",
        "**Rolled back** by node `pi-7` (automatically): accuracy 0.41 < 0.90",
        "| train_stats_source | 8 new + 1000 replay windows |",
        "8 labeled windows: normal 2, bearing_fault 2",
        "| challenger on drift | 0.9800 |",
        "## Intended use",
        "## Limits",
        "int8. The daemon's fine-tunes convert to int8 only",
    ):
        assert needle in card, needle


def test_train_writes_a_model_card_that_links_its_figures(trained: Trained) -> None:
    card = (trained.out / CARD_NAME).read_text()
    report = json.loads((trained.out / "report.json").read_text())
    assert card.startswith(f"# Model card: v{report['version']}")
    assert report["figures"] and all(f"]({name})" in card for name in report["figures"])
    assert all((trained.out / name).exists() for name in report["figures"])
    counts = report["class_counts"]
    assert sum(counts.values()) == report["n_train"] + report["n_validation"]
    assert ", ".join(f"{k} {v}" for k, v in counts.items()) in card
    assert f"{report['shipped']} (the requested variant" in card


def _attempt_parts(tmp_path: Path, accepted: bool) -> tuple[Champion, Attempt]:
    """(champion v1, attempt) with a real manifest written for the challenger v2 if accepted."""
    sha = {"model_sha256": "0" * 64, "model_bytes": 4}
    parent = Manifest(version=1, site="plant-a/v1", arch="compact", **sha)  # type: ignore[arg-type]
    champion = Champion(1, b"", b"", parent, None, tmp_path / "models" / "v0001" / "model.bundle")
    challenger = None
    if accepted:
        d = tmp_path / "models" / "v0002"
        d.mkdir(parents=True)
        m = Manifest(
            version=2,
            parent=1,
            site="plant-a/v1",
            arch="compact",
            extra={"labels_used": 8},
            **sha,  # type: ignore[arg-type]
        )
        (d / "manifest.json").write_text(json.dumps(m.to_dict()))
        challenger = Champion(2, b"", b"", m, None, d / "model.bundle")
    decision = GateDecision(
        accepted, "more accurate" if accepted else "not better", Scores(0.5, 1.0), Scores(0.9, 1.0)
    )
    return champion, Attempt(decision, 8, 3, 4.2, challenger)


@pytest.mark.parametrize("accepted", [True, False])
def test_the_daemon_records_each_fine_tune_with_labels_data_and_gate(
    tmp_path: Path, accepted: bool
) -> None:
    champion, attempt = _attempt_parts(tmp_path, accepted)
    history = ModelHistory(tmp_path / "trainer")
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    history.record_attempt(2, champion, attempt, y, source="seqno 5..12", data={"new_labels": 8})
    (rec,) = RegistryFile(tmp_path / "trainer" / REGISTRY_NAME).view().records
    assert (rec.version, rec.parent, rec.status) == (2, 1, "candidate" if accepted else "refused")
    assert rec.labels["per_class"] == dict.fromkeys(CLASSES, 2)
    assert rec.labels["source"] == "seqno 5..12" and rec.data["new_labels"] == 8
    assert rec.gate is not None and rec.gate["challenger_drift"] == 0.9
    assert rec.gate["accepted"] is accepted and rec.gate["holdout"] == 3
    card = tmp_path / "models" / "v0002" / CARD_NAME
    assert card.exists() is accepted
    if attempt.challenger is not None:
        assert "| challenger on drift | 0.9000 |" in card.read_text()
        history.published(attempt.challenger)
        assert history.view().champion() == 2
        history.discard(attempt.challenger, "its parent v1 was rolled back")
        assert history.bad_versions() == {2} and history.view().champion() is None
        assert "its parent v1 was rolled back" in card.read_text()


def test_a_published_version_the_registry_did_not_know_is_added_from_its_manifest(
    tmp_path: Path,
) -> None:
    """E.g. a renewed detector reference: published without a fine-tune attempt."""
    champion, _ = _attempt_parts(tmp_path, accepted=True)
    d = tmp_path / "models" / "v0002"
    m = Manifest.from_dict(json.loads((d / "manifest.json").read_text()))
    history = ModelHistory(tmp_path / "trainer")
    history.published(Champion(2, b"", b"", m, None, d / "model.bundle"))
    rec = history.view().get(2)
    assert rec is not None and (rec.status, rec.parent, rec.path) == ("champion", 1, str(d))
    assert rec.published is not None and (d / CARD_NAME).exists()
    history.published(champion)  # v1 unknown too: it becomes the champion, v2 retires
    assert history.view().champion() == 1 and history.view().get(2).status == "retired"  # type: ignore[union-attr]


def test_a_status_costs_one_short_serving_line_replayed_on_load(tmp_path: Path) -> None:
    path = tmp_path / REGISTRY_NAME
    reg = RegistryFile(path)
    reg.update(lambda r: _history())
    size = path.stat().st_size
    for n in range(50):  # 50 nodes start serving v2: each one short line
        reg.serving(f"pi-{n}", 2)
    grew = path.stat().st_size - size
    assert grew < 50 * 40 and reg.lines == 3 + 50
    assert RegistryFile(path).view() == reg.view()
    assert reg.view().get(2).served[-1] == "pi-49"  # type: ignore[union-attr]
