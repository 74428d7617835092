"""Fixtures of the monitoring suite: the shipped Prometheus, Alertmanager, Grafana and
docker-compose files, checked with the real tools (promtool, amtool, docker-compose) and
Grafana's published JSON schema. Helpers live in ``monitoring_support`` beside this file."""

from __future__ import annotations

import sys
from pathlib import Path

# --import-mode=importlib puts no test folder on sys.path; the helpers are imported by name.
sys.path.insert(0, str(Path(__file__).resolve().parent))
