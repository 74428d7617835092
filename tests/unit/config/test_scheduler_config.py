"""The control-plane parts of targets.yml: tier defaults, the scheduler section, cron schedules
checked by croniter, health-check paths, and every problem reported at once with its line."""

from __future__ import annotations

import textwrap
from datetime import timedelta

import pytest

from safehold.config import load_config_text
from safehold.errors import ConfigError


def load(text: str):
    return load_config_text(textwrap.dedent(text), "targets.yml", environ={})


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(text)
    return caught.value.problems


def test_defaults() -> None:
    config = load("repository: {url: /r}\ntargets:\n  - {name: x, tier: 2, source: {type: files, paths: [/a]}}\n")
    assert {number: (tier.rpo, tier.rto) for number, tier in config.tiers.items()} == {
        1: (timedelta(minutes=15), timedelta(hours=1)),
        2: (timedelta(hours=12), timedelta(hours=4)),
        3: (timedelta(hours=24), timedelta(hours=24)),
    }
    scheduler = config.scheduler
    assert (scheduler.max_concurrent, scheduler.max_per_host, scheduler.retries) == (2, 1, 3)
    assert (scheduler.jitter, scheduler.retry_backoff) == (timedelta(minutes=5), timedelta(minutes=1))
    assert (scheduler.prune_schedule, scheduler.check_schedule) == ("0 3 * * 0", "0 4 * * *")
    assert config.targets[0].forget_after_backup is True


def test_scheduler_section_and_health_checks() -> None:
    config = load(
        """\
        repository: {url: /r}
        scheduler: {max_concurrent: 8, jitter: 30s, prune_schedule: null, check_schedule: "@daily",
                    sandbox_dir: sandbox}
        targets:
          - name: x
            tier: 1
            source: {type: files, paths: [/a]}
            forget_after_backup: false
            restore_test:
              every: 1d
              health_check: {type: command, run: "test -f etc/hostname", timeout: 30s}
          - name: y
            tier: 1
            source: {type: files, paths: [/b]}
            restore_test: {health_check: {type: file_exists, path: /etc/./hostname}}
        """
    )
    assert config.scheduler.max_concurrent == 8 and config.scheduler.prune_schedule is None
    assert config.scheduler.check_schedule == "@daily"
    assert config.scheduler.sandbox_dir.endswith("/sandbox")
    assert config.targets[0].restore_test.health_check.timeout == timedelta(seconds=30)
    assert config.targets[1].restore_test.health_check.path == "etc/hostname"
    assert config.targets[0].forget_after_backup is False


def test_every_problem_at_once_with_lines() -> None:
    problems = problems_of(
        """\
        repository: {url: /r}
        scheduler:
          max_concurrent: 0
          check_schedule: "0 25 * * *"
          jitterr: 5m
        targets:
          - name: x
            tier: 1
            source: {type: files, paths: [/a]}
            schedule: "61 * * * *"
            restore_test: {health_check: {type: checksum, path: ../etc/shadow, sha256: "0000"}}
        """
    )
    assert problems[0].startswith("targets.yml:3: scheduler.max_concurrent: ")
    assert problems[1].startswith("targets.yml:4: scheduler.check_schedule: '0 25 * * *': '25' is not a valid "
                                  "hour field (valid: 0-23")
    assert problems[2] == ("targets.yml:5: scheduler.jitterr: unknown key 'jitterr'; did you mean 'jitter'? "
                           + problems[2].split("did you mean 'jitter'? ", 1)[1])
    assert problems[3].startswith("targets.yml:10: targets[x].schedule: '61 * * * *': '61' is not a valid minute")
    assert any(problem.startswith("targets.yml:11: targets[x].restore_test.health_check.path: '../etc/shadow' is "
                                  "not valid; expected a path inside the restored tree") for problem in problems)
    assert any("sha256: '0000' is not a SHA-256 digest" in problem for problem in problems)
    assert len(problems) == 6
