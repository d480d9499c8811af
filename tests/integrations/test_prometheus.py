"""Debian's Prometheus 2.42 itself: the shipped alert rules under promtool, and a real server
scraping a live pi_edge and a live trainer, queried back through its HTTP API.

The server runs deploy/prometheus/prometheus.example.yml (targets and intervals replaced) with
deploy/prometheus/edgeloop-alerts.yml; the trainer serves a champion it publishes to the node
over MQTT, the node classifies windows, and what they count comes back from PromQL. `promtool
check metrics` accepts both expositions; every rule evaluates without error and the node-down
and machine-fault alerts go pending on the real series; every query of the Grafana dashboard
(deploy/grafana/edgeloop.json) runs and names only metrics the two processes expose.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives import serialization

from protocol import Topics, Window, encode_window
from scripts.broker import Broker, BrokerError, _die_with_parent, free_port
from tests.faults._kit import NEVER_TRAIN
from tests.pi_edge._model import EdgeModels
from tests.pi_edge.conftest import Publisher

from ._products import need, promtool_check_metrics
from .conftest import BEARING, NORMAL, Children, windows

pytestmark = [pytest.mark.product]

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "prometheus"
RULES = DEPLOY / "edgeloop-alerts.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "edgeloop.json"
METRIC = re.compile(r"\b(edgeloop_[a-z0-9_]+|up)\b(?!\s*\()")  # a name, not a function


def promtool(*args: str, stdin: str | None = None, cwd: Path = DEPLOY) -> str:
    """Run promtool; its output, or a failure showing it."""
    exe = need("prometheus").path("promtool")
    done = subprocess.run(
        [str(exe), *args], input=stdin, capture_output=True, text=True, cwd=cwd, check=False
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout + done.stderr


def test_the_shipped_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    out = promtool("check", "rules", str(RULES))
    alerts = set(re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), re.M))
    assert f"SUCCESS: {len(alerts)} rules found" in out and len(alerts) == 10
    assert "SUCCESS" in promtool("test", "rules", "edgeloop-alerts.test.yml")
    tested = set(re.findall(r"alertname: (\w+)", (DEPLOY / "edgeloop-alerts.test.yml").read_text()))
    assert tested == alerts, "every alert has a unit test"
    assert "is valid prometheus config" in promtool("check", "config", "prometheus.example.yml")


def test_the_rules_unit_tests_catch_a_changed_rule(tmp_path: Path) -> None:
    """A rule that waits longer than its test says fails `promtool test rules`: the tests bite."""
    shutil.copy(DEPLOY / "edgeloop-alerts.test.yml", tmp_path)
    text = RULES.read_text()
    changed = text.replace("== 0\n        for: 2m", "== 0\n        for: 3m", 1)
    assert changed != text
    (tmp_path / RULES.name).write_text(changed)
    exe = need("prometheus").path("promtool")
    done = subprocess.run(
        [str(exe), "test", "rules", "edgeloop-alerts.test.yml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode != 0 and "EdgeloopNodeDown" in done.stdout + done.stderr


# ---------------------------------------------------------------------- a real server
class Prometheus:
    """A Prometheus process on a free loopback port, and its HTTP API."""

    def __init__(self, exe: Path, config: Path, data: Path, log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [
                str(exe),
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--storage.tsdb.path={data}",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, safe before exec
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._out.close()

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.base}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> dict[frozenset[tuple[str, str]], float]:
        """An instant query: value per label set."""
        data = self.api("query", query=expr)
        return {frozenset(r["metric"].items()): float(r["value"][1]) for r in data["result"]}

    def wait(self, check: Callable[[], T], timeout: float, what: str) -> T:
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = check()
            except OSError as exc:  # not listening yet
                last = exc
            if last and not isinstance(last, Exception):
                return last  # type: ignore[no-any-return]
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise AssertionError(f"waited {timeout:g} s for {what}; last {last!r}\n{tail}")
            time.sleep(0.2)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def _value(text: str, sample: str) -> float | None:
    m = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def _config(edge_port: int, trainer_port: int) -> str:
    """prometheus.example.yml with the test's targets, 1 s intervals and the rules' full path."""
    text = (DEPLOY / "prometheus.example.yml").read_text()
    edge = '["pi-1.plant.example:9108", "pi-2.plant.example:9108"]'
    trainer = '["jetson.plant.example:9109"]'
    assert edge in text and trainer in text and text.count("15s") == 2
    text = text.replace(edge, f'["127.0.0.1:{edge_port}"]')
    text = text.replace(trainer, f'["127.0.0.1:{trainer_port}"]').replace("15s", "1s")
    return text.replace("  - edgeloop-alerts.yml", f"  - {RULES}")


def _dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Broker]:
    """A broker of this test alone: the trainer's retained model stays out of the session's."""
    try:
        broker = Broker(run_dir=tmp_path / "broker").start()
    except BrokerError as exc:
        pytest.fail(f"cannot start the test broker: {exc}")
    yield broker
    broker.stop()


@pytest.mark.broker
@pytest.mark.timeout(240)
def test_a_real_prometheus_scrapes_a_live_node_and_trainer_and_evaluates_the_alerts(
    site: Broker, models: EdgeModels, children: Children, tmp_path: Path
) -> None:
    prometheus = need("prometheus")
    prefix = "test/prometheus"
    topics = Topics(prefix)
    # the trainer's store: the test model as its champion v1, made for this site
    v1 = tmp_path / "store" / "models" / "v0001"
    v1.mkdir(parents=True)
    (v1 / "model.bundle").write_bytes(models.bundle(1, site=prefix))
    shutil.copy(models.keras_path, v1 / "model.keras")
    key = tmp_path / "trainer.pem"
    key.write_bytes(
        models.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    edge_port, trainer_port = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(_config(edge_port, trainer_port))
    promtool("check", "config", str(config))
    server = Prometheus(
        prometheus.path("prometheus"), config, tmp_path / "tsdb", tmp_path / "prometheus.log"
    )
    try:
        children.start(
            "trainer",
            "jetson_trainer",
            *("serve", "--store", str(tmp_path / "store"), "--private-key", str(key)),
            *("--broker", site.address, "--prefix", prefix, "--client-id", "trainer-prom"),
            *("--no-dashboard", "--labels", NEVER_TRAIN, "--check-labels", NEVER_TRAIN),
            *("--metrics-port", str(trainer_port)),
        )
        edge = children.start(
            "pi-prom",
            "pi_edge",
            *("run", "--broker", site.address, "--prefix", prefix, "--node", "pi-prom"),
            *("--public-key", str(models.public_key_path), "--no-dashboard"),
            *("--state-dir", str(tmp_path / "state"), "--status-interval", "0.5"),
            *("--metrics-port", str(edge_port)),
        )
        # the node serves the model the trainer published: v1 over MQTT
        server.wait(
            lambda: _value(_scrape(edge_port), "edgeloop_model_version") == 1.0,
            90,
            f"the node serving v1\n{children.tails()}",
        )
        server.wait(  # it publishes the model before its metrics server listens
            lambda: _value(_scrape(trainer_port), "edgeloop_trainer_champion_version") == 1.0,
            60,
            f"the trainer's metrics\n{children.tails()}",
        )
        feeder = Publisher(site.address, f"feeder-{time.time_ns()}")
        sent: dict[str, int] = {}
        plan = [("m00", NORMAL), ("m01", BEARING), ("m02", NORMAL)]
        for i, (machine, label) in enumerate(plan):
            for seq, x in enumerate(windows(label, 10, seed=i)):
                truth = label if seq % 2 else None  # half labeled: the labeled accuracy too
                w = Window(machine, seq, time.time_ns(), x, label=truth)
                feeder.publish(topics.window(machine), encode_window(w))
                sent[machine] = sent.get(machine, 0) + 1
        feeder.close()
        total = sum(sent.values())
        server.wait(
            lambda: _value(_scrape(edge_port), "edgeloop_windows_classified_total") == total,
            30,
            "every window classified",
        )

        # promtool accepts what both expose
        expositions = {"edge": _scrape(edge_port), "trainer": _scrape(trainer_port)}
        for text in expositions.values():
            promtool_check_metrics(text)

        # ... and the server holds the same figures
        def classified() -> bool:
            got = server.query('edgeloop_windows_classified_total{job="edgeloop-edge"}')
            return list(got.values()) == [float(total)]

        t0 = time.monotonic()
        server.wait(classified, 30, "the classified count in Prometheus")
        print(f"Prometheus had the node's count {time.monotonic() - t0:.1f} s after the feed")

        def both_up() -> bool:
            up = server.query("up")
            got = sorted((dict(k)["job"], v) for k, v in up.items())
            return got == [("edgeloop-edge", 1.0), ("edgeloop-trainer", 1.0)]

        server.wait(both_up, 20, "both targets up")
        per_machine = server.query('edgeloop_machine_windows_total{job="edgeloop-edge"}')
        assert {dict(k)["machine"]: v for k, v in per_machine.items()} == {
            m: float(n) for m, n in sent.items()
        }
        assert list(server.query("edgeloop_trainer_champion_version").values()) == [1.0]
        assert list(server.query('edgeloop_model_version{job="edgeloop-edge"}').values()) == [1.0]
        fault = server.query('edgeloop_machine_class{machine="m01"} == 1')
        assert [dict(k)["class"] for k in fault] == ["bearing_fault"]

        # every rule loaded and evaluates cleanly; the machine fault goes pending on m01
        def rules_ok() -> list[dict[str, Any]]:
            groups = server.api("rules")["groups"]
            rules = [r for g in groups for r in g["rules"]]
            ok = len(rules) == 10 and all(r["health"] == "ok" for r in rules)
            return rules if ok else []

        server.wait(rules_ok, 20, "all 10 rules evaluated without error")

        def alerts(name: str) -> list[dict[str, Any]]:
            return [a for a in server.api("alerts")["alerts"] if a["labels"]["alertname"] == name]

        [pending] = server.wait(lambda: alerts("EdgeloopMachineFault"), 20, "the fault alert")
        assert pending["state"] == "pending"  # for: 1m
        assert pending["labels"]["machine"] == "m01"
        assert pending["labels"]["class"] == "bearing_fault"

        # the Grafana dashboard: each query runs, and names only metrics the processes expose
        # (a series Prometheus holds, or a family declared without series yet: faults, errors)
        names = set(server.api("label/__name__/values"))
        declared: set[str] = set()
        for text in expositions.values():
            exposed = {ln.split("{")[0].split(" ")[0] for ln in text.splitlines() if ln[:1] != "#"}
            assert exposed - {""} <= names, exposed - names
            declared |= set(re.findall(r"^# TYPE (\S+) ", text, re.M))
        assert "edgeloop_faults_total" in declared - names  # nothing failed
        rules = RULES.read_text()
        exprs = re.findall(r"expr: >-\n((?:\s{10}.*\n)+)", rules)
        exprs += [e for e in re.findall(r"expr: (.+)$", rules, re.M) if e != ">-"]
        used: set[str] = set()
        for expr in [*_dashboard_queries(), *exprs]:
            used |= set(METRIC.findall(expr))
            runnable = expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
            server.api("query", query=runnable)  # a PromQL error would fail here
        unknown = used - names - declared
        assert not unknown, f"queried but exposed by neither the node nor the trainer: {unknown}"
        assert {"edgeloop_trainer_champion_version", "edgeloop_machine_drift", "up"} <= used

        # the node dies: up goes 0 and EdgeloopNodeDown goes pending (for: 2m)
        edge.kill9()
        [down] = server.wait(lambda: alerts("EdgeloopNodeDown"), 20, "the node-down alert")
        assert down["state"] == "pending" and down["labels"]["job"] == "edgeloop-edge"
    finally:
        server.stop()
