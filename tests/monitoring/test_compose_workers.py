"""monitoring/docker-compose.workers.yml: a control plane on a PostgreSQL catalog and queue with two
workers; valid for docker-compose, its safehold configuration accepted by `safehold config check`,
the queue's DSN and passwords never in a file of the checkout."""

from __future__ import annotations

import subprocess
import sys

import yaml
from monitoring_support import MONITORING, tool

COMPOSE = MONITORING / "docker-compose.workers.yml"
CONFIG = MONITORING / "safehold" / "targets-workers.yml"


def test_the_workers_stack_is_valid_compose() -> None:
    result = subprocess.run([tool("docker-compose"), "-f", COMPOSE.name, "config", "-q"], cwd=MONITORING,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_control_plane_and_two_workers_on_one_postgresql() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert set(services) == {"postgres", "safehold", "worker-1", "worker-2"}
    assert services["safehold"]["command"][0] == "serve"
    for name in ("worker-1", "worker-2"):
        assert services[name]["command"][0] == "worker"
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        environment = services[name]["environment"]
        assert environment["SAFEHOLD_QUEUE_DSN"].startswith("postgresql://safehold@postgres")
        assert ":" not in environment["SAFEHOLD_QUEUE_DSN"].split("//")[1].split("@")[0], "no password in the DSN"
    assert "--host-label" in services["worker-2"]["command"]
    for name, service in services.items():
        assert all(port.startswith("127.0.0.1:") for port in service.get("ports", [])), name


def test_the_workers_configuration_is_valid_and_uses_the_queue() -> None:
    result = subprocess.run([sys.executable, "-m", "safehold.cli.main", "--config", str(CONFIG), "config", "check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(CONFIG.read_text())
    assert config["scheduler"]["executor"] == "procrastinate"
    assert config["catalog"]["url"].startswith("postgresql+psycopg://")
