"""monitoring/docker-compose.yml: valid for docker-compose (1.29 validates without an engine),
every service with a health check and persistent data on volumes, every mounted file present,
the Prometheus and safehold configurations it mounts accepted by promtool and `safehold config
check`, and the images pinned to the versions the tests run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml
from monitoring_support import MONITORING, tool

COMPOSE = MONITORING / "docker-compose.yml"


def compose_config(folder: Path, name: str = "docker-compose.yml") -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("docker-compose"), "-f", name, "config", "-q"], cwd=folder,
                          capture_output=True, text=True, timeout=120)


def test_docker_compose_config_is_valid():
    result = compose_config(MONITORING)
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_validation_bites(tmp_path):
    document = yaml.safe_load(COMPOSE.read_text())
    document["services"]["prometheus"]["healthcheck"]["intervall"] = "15s"
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(document))
    result = compose_config(tmp_path)
    assert result.returncode != 0
    assert "intervall" in result.stderr


def test_the_stack_has_every_service_with_health_checks_and_volumes():
    document = yaml.safe_load(COMPOSE.read_text())
    services = document["services"]
    assert set(services) == {"safehold", "prometheus", "alertmanager", "grafana"}
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
        assert service["restart"] == "unless-stopped", name
        assert all(port.startswith("127.0.0.1:") for port in service["ports"]), name
    named = set(document["volumes"])
    for name in ("safehold", "prometheus", "alertmanager", "grafana"):
        mounts = [volume.split(":")[0] for volume in services[name]["volumes"]]
        assert f"{name}-data" in mounts and f"{name}-data" in named, f"{name} keeps its data on a volume"
    assert services["safehold"]["healthcheck"]["test"][-1].endswith("'http://127.0.0.1:8080/healthz', timeout=3)")


def test_every_mounted_file_exists():
    document = yaml.safe_load(COMPOSE.read_text())
    for name, service in document["services"].items():
        for volume in service["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (MONITORING / source).exists(), f"{name} mounts missing {source}"
    build = document["services"]["safehold"]["build"]
    assert (MONITORING / build["context"] / build["dockerfile"]).is_file()


def test_secrets_are_files_that_git_ignores():
    document = yaml.safe_load(COMPOSE.read_text())
    for name, secret in document["secrets"].items():
        assert secret["file"] == f"./secrets/{name}"
    ignore = (MONITORING / "secrets" / ".gitignore").read_text().split()
    assert ignore[ignore.index("*")] == "*"
    # the configurations read the secrets where compose mounts them
    alertmanager = (MONITORING / "alertmanager" / "alertmanager.yml").read_text()
    for name in ("slack_api_url", "pagerduty_routing_key", "smtp_password"):
        assert f"/run/secrets/{name}" in alertmanager
        assert name in document["services"]["alertmanager"]["secrets"]
    assert "/run/secrets/safehold_password" in (MONITORING / "safehold" / "targets.yml").read_text()


def test_create_examples_writes_every_secret_once(tmp_path):
    script = tmp_path / "secrets" / "create-examples.sh"
    script.parent.mkdir()
    script.write_text((MONITORING / "secrets" / "create-examples.sh").read_text())
    subprocess.run(["bash", str(script)], check=True, capture_output=True)
    document = yaml.safe_load(COMPOSE.read_text())
    for name in document["secrets"]:
        assert (script.parent / name).stat().st_mode & 0o077 == 0, f"{name} must be private"
    first = (script.parent / "safehold_password").read_text()
    subprocess.run(["bash", str(script)], check=True, capture_output=True)
    assert (script.parent / "safehold_password").read_text() == first, "existing secrets are kept"


def test_prometheus_configuration_is_valid_and_scrapes_job_safehold():
    result = subprocess.run([tool("promtool"), "check", "config", str(MONITORING / "prometheus" / "prometheus.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "safehold"]
    assert job["static_configs"][0]["targets"] == ["safehold:8080"]


def test_safehold_configuration_of_the_stack_is_valid():
    result = subprocess.run(
        [sys.executable, "-m", "safehold.cli.main", "--config", str(MONITORING / "safehold" / "targets.yml"),
         "config", "check"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_images_are_the_versions_the_tests_run():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    for image, program in (("prometheus", "prometheus"), ("alertmanager", "prometheus-alertmanager")):
        output = subprocess.run([tool(program), "--version"], capture_output=True, text=True)
        installed = re.search(r"version (\d+\.\d+)\.", output.stdout + output.stderr).group(1)
        assert services[image]["image"].startswith(f"prom/{image}:v{installed}."), (services[image]["image"], installed)
