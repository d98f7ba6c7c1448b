"""The ops files are valid for the real tools: promtool (config, rules, rule unit tests),
docker-compose (no engine needed), and every path they mount exists in the repository.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, require

PROMETHEUS_DIR = REPO / "dashboards/prometheus"


def run(*argv: str, cwd: Path = REPO) -> str:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.mark.prometheus
def test_promtool_check_config_and_rules() -> None:
    promtool = require("promtool")
    out = run(promtool, "check", "config", "prometheus.yml", cwd=PROMETHEUS_DIR)
    assert "SUCCESS: 4 rules found" in out
    assert "SUCCESS: 4 rules found" in run(
        promtool, "check", "rules", "alerts.yml", cwd=PROMETHEUS_DIR
    )


@pytest.mark.prometheus
def test_promtool_rule_unit_tests_pass_and_cover_every_alert() -> None:
    promtool = require("promtool")
    assert "SUCCESS" in run(promtool, "test", "rules", "alerts_test.yml", cwd=PROMETHEUS_DIR)
    alerts = {
        rule["alert"]
        for group in yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())["tests"]
    firing = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    quiet = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if not case.get("exp_alerts")
    }
    assert firing == alerts
    assert quiet == alerts


@pytest.mark.prometheus
def test_promtool_test_rules_can_fail(tmp_path: Path) -> None:
    """The unit tests are real: a broken threshold makes them fail."""
    promtool = require("promtool")
    for name in ("alerts.yml", "alerts_test.yml"):
        shutil.copy(PROMETHEUS_DIR / name, tmp_path / name)
    rules = tmp_path / "alerts.yml"
    rules.write_text(rules.read_text().replace(") > 0.1", ") > 0.5"))
    result = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"], cwd=tmp_path, capture_output=True
    )
    assert result.returncode != 0


def compose() -> dict[str, object]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def test_docker_compose_config_is_valid() -> None:
    docker_compose = require("docker-compose")
    run(docker_compose, "-f", "docker-compose.yml", "config", "-q")


def test_every_mounted_path_exists() -> None:
    spec = compose()
    services = spec["services"]
    assert isinstance(services, dict)
    assert set(services) == {"otelstats", "prometheus", "grafana", "otel-collector"}
    named_volumes = set(spec.get("volumes") or {})  # type: ignore[call-overload]
    mounted = []
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source in named_volumes:
                continue
            mounted.append(source)
    for secret in (spec.get("secrets") or {}).values():  # type: ignore[attr-defined]
        mounted.append(secret["file"])
    assert mounted, "nothing mounted from the repository"
    missing = [m for m in mounted if not (REPO / m).exists()]
    assert missing == []
    build = services["otelstats"]["build"]
    assert (REPO / build / "Dockerfile").is_file()


def test_compose_wires_the_dashboards() -> None:
    services = compose()["services"]
    assert isinstance(services, dict)
    grafana = services["grafana"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"] if v.startswith("./"))
    host_dir = next(src for src, dst in mounts.items() if home.startswith(dst + "/"))
    assert (REPO / host_dir / Path(home).name).is_file()
    provider = yaml.safe_load(
        (REPO / "dashboards/grafana/provisioning/dashboards/otelstats.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == str(Path(home).parent)
    otelstats = services["otelstats"]
    assert "otelstats serve --host 0.0.0.0" in " ".join(otelstats["command"])
    assert "OTELSTATS_TOKEN" in " ".join(otelstats["command"])
    # Prometheus reads its bearer token from the same file the app gets as its token.
    scrape = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())["scrape_configs"][0]
    token_file = PROMETHEUS_DIR / scrape["authorization"]["credentials_file"]
    secret = compose()["secrets"]["otelstats_token"]["file"]  # type: ignore[index]
    assert token_file.resolve() == (REPO / secret).resolve()


def test_compose_wires_the_collector_to_otelstats_with_the_token() -> None:
    spec = compose()
    collector = spec["services"]["otel-collector"]  # type: ignore[index]
    mounts = dict(v.split(":")[:2] for v in collector["volumes"])
    config_path = next(src for src, dst in mounts.items() if dst.endswith("config.yaml"))
    config = yaml.safe_load((REPO / config_path).read_text())
    assert config["exporters"]["otlphttp/otelstats"]["endpoint"] == "http://otelstats:8321"
    assert "otelstats_token" in collector["secrets"]
    token_file = config["extensions"]["bearertokenauth/otelstats"]["filename"]
    assert token_file == "/run/secrets/otelstats_token"
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["exporters"] == ["otlphttp/otelstats"]


def test_dockerfile_runs_serve_as_non_root_with_a_healthcheck() -> None:
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text().splitlines()]
    assert lines[next(i for i, x in enumerate(lines) if x.startswith("FROM"))].endswith("-slim")
    assert any(x.startswith("RUN pip install .") for x in lines)
    user = next(x for x in lines if x.startswith("USER "))
    assert user.split()[1] not in {"root", "0"}
    healthcheck = " ".join(
        lines[lines.index(next(x for x in lines if x.startswith("HEALTHCHECK"))) :]
    )
    assert "/healthz" in healthcheck
    assert lines[-1] == 'CMD ["otelstats", "serve", "--host", "0.0.0.0"]'


def test_grafana_dashboard_shape() -> None:
    dashboard = json.loads((REPO / "dashboards/grafana/otelstats.json").read_text())
    assert dashboard["uid"] == "otelstats"
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names == ["datasource", "job", "instance", "model"]
    titles = {p["title"] for p in dashboard["panels"]}
    for wanted in (
        "API calls",
        "Total tokens",
        "Success rate",
        "Time to first token p95",
        "Per model",
    ):
        assert wanted in titles
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            assert '{job=~"$job",instance=~"$instance"' in target["expr"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
