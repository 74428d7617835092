"""The scenario runbooks and the example drills stay in step: every drill scenario has its runbook
at the path the seed's README links, the runbook says how to rehearse it with ``safehold drill``,
every ``safehold`` command it names exists, and the example configuration's drills are valid."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from safehold.config import load_config
from safehold.config.drills import DRILL_SCENARIOS, SCENARIO_RUNBOOKS

ROOT = Path(__file__).resolve().parents[3]


def commands() -> dict[str, set[str]]:
    """Each top-level command of the CLI, with its subcommands (empty for a plain command)."""
    import click
    import typer

    from safehold.cli.main import app

    group = typer.main.get_command(app)
    return {name: set(command.commands) if isinstance(command, click.Group) else set()
            for name, command in group.commands.items()}


@pytest.mark.parametrize("scenario", DRILL_SCENARIOS)
def test_every_scenario_has_its_runbook_with_the_drill_commands(scenario: str) -> None:
    runbook = ROOT / "runbooks" / SCENARIO_RUNBOOKS[scenario]
    text = runbook.read_text()
    assert f"`{scenario}`" in text
    assert "safehold drill run" in text and "safehold drill plan" in text
    assert runbook.name in (ROOT / "runbooks" / "README.md").read_text()


@pytest.mark.parametrize("scenario", DRILL_SCENARIOS)
def test_every_safehold_command_a_runbook_names_exists(scenario: str) -> None:
    known = commands()
    text = (ROOT / "runbooks" / SCENARIO_RUNBOOKS[scenario]).read_text()
    used = re.findall(r"`?safehold ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", text)
    assert used
    for command, sub in used:
        assert command in known, f"{SCENARIO_RUNBOOKS[scenario]} names 'safehold {command}', which does not exist"
        if known[command]:
            assert sub in known[command], f"'safehold {command} {sub}' does not exist"


def test_the_example_drills_are_valid_and_have_their_runbooks() -> None:
    config = load_config(ROOT / "configs" / "targets.yml", environ={})
    scenarios = {drill.scenario for drill in config.drills}
    assert scenarios >= {"on_prem_host_failure", "data_corruption"}
    examples = (ROOT / "configs" / "targets.yml").read_text()
    for drill in config.drills:
        assert drill.name in (ROOT / "runbooks" / SCENARIO_RUNBOOKS[drill.scenario]).read_text()
    assert "runbooks/aws_region_failure.md" in examples


def test_the_aws_region_failure_example_is_valid_and_named_by_its_runbook() -> None:
    config = load_config(ROOT / "configs" / "aws_region_failure.yml", environ={})
    runbook = (ROOT / "runbooks" / "aws_region_failure.md").read_text()
    assert "configs/aws_region_failure.yml" in runbook
    for drill in config.drills:
        assert drill.scenario == "aws_region_failure" and drill.restore_to.type == "aws"
        assert drill.name in runbook
        for step in drill.steps:  # each step's target copies its snapshots to the drill's region
            regions = [copy.region for copy in config.target(step.target).source.dr_copies]
            assert drill.restore_to.region in regions
