"""Build safehold's Grafana dashboards (dashboards/*.json) from code with grafana-foundation-sdk.

    python dashboards/build.py            # rewrite dashboards/*.json
    python dashboards/build.py --check    # exit 1 if a committed file differs from the code

The SDK is pinned in the ``monitoring`` extra (grafana-foundation-sdk 11.6.0, for Grafana 11.6);
tests/monitoring/test_dashboards.py checks that the committed JSON is what this file builds, that
it validates against the JSON schema generated from Grafana's @grafana/schema package
(monitoring/grafana/schema/), and that every query parses and reads only metrics safehold exports.

Every query reads the metrics of docs/monitoring.md from the Prometheus datasource provisioned
with uid "prometheus" (monitoring/grafana/provisioning/datasources/prometheus.yml).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, dashboard, gauge, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

HERE = Path(__file__).resolve().parent
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="prometheus")
TARGETS = 'target=~"$target"'

# Per-target ages relative to their objective: 1.0 means "exactly at the RPO/RTO".
RPO_USED = (
    f"(time() - safehold_backup_last_success_timestamp_seconds{{{TARGETS}}})"
    " / on (instance, target) group_left () safehold_target_rpo_seconds"
)
ART_OVER_RTO = (
    f"safehold_restore_test_last_duration_seconds{{{TARGETS}}}"
    " / on (instance, target) group_left () safehold_target_rto_seconds"
)
# The newest passing ART from restore tests and drills alike (RTOApproaching reads the same ratio).
LAST_ART_OVER_RTO = (
    f"safehold_target_last_art_seconds{{{TARGETS}}}"
    " / on (instance, target) group_left () safehold_target_rto_seconds"
)
# Failures in the last 24 h: increase() for counters that existed a day ago, the whole value for
# counters born since (increase() needs two samples, so a counter that starts above 0 adds nothing).
FAILURES = f"safehold_job_failures_total{{{TARGETS}}}"
FAILED_24H = (
    f"(sum(increase({FAILURES}[24h]) and {FAILURES} offset 24h) or vector(0))"
    f" + (sum({FAILURES} unless {FAILURES} offset 24h) or vector(0))"
)

# One value per series: the newest one (Grafana's own default for stat panels).
LAST_VALUE = common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False)
COMPLIANT = (
    "(time() - safehold_backup_last_success_timestamp_seconds)"
    " <= on (instance, target) group_left () safehold_target_rpo_seconds"
)


# --- small helpers ----------------------------------------------------------------------------


def query(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False, table_format: bool = False):
    built = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        built = built.legend_format(legend)
    if instant:
        built = built.instant()
    if table_format:
        built = built.format(PromQueryFormat.TABLE)
    return built


def thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for value, color in steps])
    )


def status_mappings(ok: str, failed: str) -> list[model.ValueMap]:
    return [
        model.ValueMap(
            options={
                "1": model.ValueMappingResult(text=ok, color="green", index=0),
                "0": model.ValueMappingResult(text=failed, color="red", index=1),
            }
        )
    ]


def graph() -> timeseries.Panel:
    """A time series panel with a table legend (last and max value) and a shared tooltip."""
    return (
        timeseries.Panel()
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
        .tooltip(common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING))
    )


def position(x: int, y: int, w: int, h: int) -> model.GridPos:
    return model.GridPos(x=x, y=y, w=w, h=h)


def target_variable() -> dashboard.QueryVariable:
    return (
        dashboard.QueryVariable("target")
        .label("Target")
        .datasource(DATASOURCE)
        .query({"query": "label_values(safehold_target_rpo_seconds, target)", "refId": "targets"})
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .current(model.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


def new_dashboard(uid: str, title: str, description: str, time_from: str) -> dashboard.Dashboard:
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["safehold", "backup"])
        .refresh("1m")
        .time(time_from, "now")
        .timezone("browser")
        .editable()
        .with_variable(target_variable())
    )


# --- the dashboards -----------------------------------------------------------------------------


def overview() -> dashboard.Dashboard:
    """Job status, RPO compliance per target and tier, last restore tests with ART against RTO."""
    board = new_dashboard(
        "safehold-overview",
        "safehold overview",
        "Job status, RPO compliance per target and tier, and the last restore tests with their recovery time "
        "against the RTO.",
        "now-24h",
    )
    board = board.with_row(dashboard.Row("Jobs").grid_pos(position(0, 0, 24, 1)))
    stats = [
        ("Backups succeeded", "Targets whose newest backup wrote its snapshot: succeeded, or partial (BackupPartial).",
         f"count(safehold_backup_last_status{{{TARGETS}}} == 1) or vector(0)", [(None, "green")]),
        ("Backups failed", "Targets whose newest backup failed (BackupJobFailed).",
         f"count(safehold_backup_last_status{{{TARGETS}}} == 0) or vector(0)", [(None, "green"), (1, "red")]),
        ("Jobs running", "Jobs running now, of every kind.",
         "sum(safehold_jobs_running) or vector(0)", [(None, "blue")]),
        ("Failed jobs (24h)", "Jobs of every kind that failed in the last 24 hours. A failure counter first seen "
         "within the window counts in full (increase() alone would miss one that began above 0).",
         FAILED_24H, [(None, "green"), (1, "orange")]),
    ]
    for index, (title, description, expr, steps) in enumerate(stats):
        board = board.with_panel(
            stat.Panel()
            .title(title)
            .description(description)
            .datasource(DATASOURCE)
            .with_target(query(expr, title, instant=True))
            .decimals(0)
            .thresholds(thresholds(*steps))
            .color_mode(common.BigValueColorMode.BACKGROUND)
            .graph_mode(common.BigValueGraphMode.NONE)
            .reduce_options(LAST_VALUE)
            .grid_pos(position(index * 6, 1, 6, 4))
        )
    board = board.with_panel(
        stat.Panel()
        .title("Newest backup per target")
        .description("Status of each target's newest backup.")
        .datasource(DATASOURCE)
        .with_target(query(f"safehold_backup_last_status{{{TARGETS}}}", "{{target}}", instant=True))
        .mappings(status_mappings("ok", "failed"))
        .thresholds(thresholds((None, "red"), (1, "green")))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .reduce_options(LAST_VALUE)
        .grid_pos(position(0, 5, 12, 6))
    )
    board = board.with_panel(
        graph()
        .title("Jobs running by kind")
        .datasource(DATASOURCE)
        .with_target(query("sum by (kind) (safehold_jobs_running)", "{{kind}}"))
        .unit("none")
        .decimals(0)
        .min(0)
        .grid_pos(position(12, 5, 12, 6))
    )

    board = board.with_row(dashboard.Row("Recovery point objective").grid_pos(position(0, 11, 24, 1)))
    board = board.with_panel(
        bargauge.Panel()
        .title("Age of the last good backup, as a share of the RPO")
        .description("100 % is the tier's RPO: beyond it the target violates its RPO (RPOViolated). "
                     "A target without any successful backup shows no bar and counts as violating.")
        .datasource(DATASOURCE)
        .with_target(query(RPO_USED, "{{target}} (tier {{tier}})", instant=True))
        .unit("percentunit")
        .min(0)
        .max(1.5)
        .thresholds(thresholds((None, "green"), (0.8, "orange"), (1, "red")))
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
        .orientation(common.VizOrientation.HORIZONTAL)
        .reduce_options(LAST_VALUE)
        .grid_pos(position(0, 12, 12, 8))
    )
    board = board.with_panel(
        bargauge.Panel()
        .title("RPO compliance by tier")
        .description("Share of each tier's targets whose last good backup is within the RPO; "
                     "never-backed-up targets count as violating.")
        .datasource(DATASOURCE)
        .with_target(query(
            f"count by (tier) ({COMPLIANT}) / count by (tier) (safehold_target_rpo_seconds)"
            f" or count by (tier) (safehold_target_rpo_seconds) * 0",
            "tier {{tier}}", instant=True,
        ))
        .unit("percentunit")
        .min(0)
        .max(1)
        .thresholds(thresholds((None, "red"), (0.95, "orange"), (1, "green")))
        .display_mode(common.BarGaugeDisplayMode.LCD)
        .orientation(common.VizOrientation.HORIZONTAL)
        .reduce_options(LAST_VALUE)
        .grid_pos(position(12, 12, 12, 8))
    )

    board = board.with_row(dashboard.Row("Restore tests").grid_pos(position(0, 20, 24, 1)))
    board = board.with_panel(
        table.Panel()
        .title("Last restore test per target")
        .description("ART: the actual recovery time of the newest restore test, from the start of the restore to a "
                     "passing health check, against the tier's RTO.")
        .datasource(DATASOURCE)
        .with_target(query(f"safehold_restore_test_last_status{{{TARGETS}}}", ref="status", instant=True,
                           table_format=True))
        .with_target(query(f"safehold_restore_test_last_duration_seconds{{{TARGETS}}}", ref="art", instant=True,
                           table_format=True))
        .with_target(query(f"safehold_target_rto_seconds{{{TARGETS}}}", ref="rto", instant=True, table_format=True))
        .with_target(query(f"time() - (safehold_restore_test_last_success_timestamp_seconds{{{TARGETS}}} > 0)",
                           ref="age", instant=True, table_format=True))
        .with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(model.DataTransformerConfig(id_val="organize", options={
            "excludeByName": {"Time": True, "__name__": True, "instance": True, "job": True},
            "renameByName": {"Value #status": "Last test", "Value #art": "ART (last pass)", "Value #rto": "RTO",
                             "Value #age": "Last pass (ago)", "target": "Target", "tier": "Tier", "source": "Source"},
            "indexByName": {"target": 0, "tier": 1, "source": 2, "Value #status": 3, "Value #art": 4,
                            "Value #rto": 5, "Value #age": 6},
        }))
        .frame_index(0)
        .show_header(True)
        .override_by_name("Last test", [
            model.DynamicConfigValue(id_val="mappings", value=status_mappings("passed", "failed")),
            model.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"}),
        ])
        .override_by_name("ART (last pass)", [model.DynamicConfigValue(id_val="unit", value="s")])
        .override_by_name("RTO", [model.DynamicConfigValue(id_val="unit", value="s")])
        .override_by_name("Last pass (ago)", [model.DynamicConfigValue(id_val="unit", value="s")])
        .grid_pos(position(0, 21, 14, 9))
    )
    board = board.with_panel(
        bargauge.Panel()
        .title("ART as a share of the RTO")
        .description("100 % is the tier's RTO: a longer recovery raises RTOAtRisk.")
        .datasource(DATASOURCE)
        .with_target(query(ART_OVER_RTO, "{{target}} (tier {{tier}})", instant=True))
        .unit("percentunit")
        .min(0)
        .max(1.5)
        .thresholds(thresholds((None, "green"), (0.8, "orange"), (1, "red")))
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
        .orientation(common.VizOrientation.HORIZONTAL)
        .reduce_options(LAST_VALUE)
        .grid_pos(position(14, 21, 10, 9))
    )

    board = board.with_row(dashboard.Row("Disaster-recovery drills").grid_pos(position(0, 30, 24, 1)))
    board = board.with_panel(
        table.Panel()
        .title("Last drill per scenario")
        .description("Each drill of targets.yml ('drills:'): the newest run's outcome, how long the newest passing "
                     "run took, and how long ago it passed. A failed drill raises DRDrillFailed.")
        .datasource(DATASOURCE)
        .with_target(query("safehold_drill_last_status", ref="status", instant=True, table_format=True))
        .with_target(query("safehold_drill_last_duration_seconds", ref="duration", instant=True, table_format=True))
        .with_target(query("time() - (safehold_drill_last_success_timestamp_seconds > 0)", ref="age", instant=True,
                           table_format=True))
        .with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(model.DataTransformerConfig(id_val="organize", options={
            "excludeByName": {"Time": True, "__name__": True, "instance": True, "job": True},
            "renameByName": {"Value #status": "Last run", "Value #duration": "Duration (last pass)",
                             "Value #age": "Last pass (ago)", "drill": "Drill", "scenario": "Scenario"},
            "indexByName": {"drill": 0, "scenario": 1, "Value #status": 2, "Value #duration": 3, "Value #age": 4},
        }))
        .frame_index(0)
        .show_header(True)
        .override_by_name("Last run", [
            model.DynamicConfigValue(id_val="mappings", value=status_mappings("passed", "failed")),
            model.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"}),
        ])
        .override_by_name("Duration (last pass)", [model.DynamicConfigValue(id_val="unit", value="s")])
        .override_by_name("Last pass (ago)", [model.DynamicConfigValue(id_val="unit", value="s")])
        .grid_pos(position(0, 31, 12, 8))
    )
    board = board.with_panel(
        bargauge.Panel()
        .title("Drill ART per target")
        .description("Each target's actual recovery time in the newest passing drill, from the drill's start (the "
                     "declared disaster) to the target being healthy.")
        .datasource(DATASOURCE)
        .with_target(query("safehold_drill_target_art_seconds", "{{drill}}: {{target}}", instant=True))
        .unit("s")
        .min(0)
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
        .orientation(common.VizOrientation.HORIZONTAL)
        .reduce_options(LAST_VALUE)
        .grid_pos(position(12, 31, 12, 8))
    )
    board = board.with_panel(
        graph()
        .title("ART trend against the RTO")
        .description("Each target's newest passing actual recovery time (restore test or drill step) as a share of "
                     "its tier's RTO, over time. At 80 % RTOApproaching warns; above 100 % the RTO is missed. A "
                     "line far below 25 % for weeks: the RTO could be tightened (safehold status says so).")
        .datasource(DATASOURCE)
        .with_target(query(LAST_ART_OVER_RTO, "{{target}} (tier {{tier}})"))
        .unit("percentunit")
        .min(0)
        .thresholds(thresholds((None, "green"), (0.8, "orange"), (1, "red")))
        .thresholds_style(common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.LINE))
        .grid_pos(position(0, 39, 24, 8))
    )
    return board


def trends() -> dashboard.Dashboard:
    """Backup duration and data size over time, per target."""
    board = new_dashboard(
        "safehold-backup-trends",
        "safehold backup trends",
        "How long backups take and how much data they read and add, per target, over time.",
        "now-7d",
    )
    panels: list[tuple[str, str, str, str, Callable[[timeseries.Panel], timeseries.Panel]]] = [
        ("Backup duration (p95)", "95th percentile of backup durations per target, over the rate interval.",
         f"histogram_quantile(0.95, sum by (target, le) "
         f"(rate(safehold_backup_duration_seconds_bucket{{{TARGETS}}}[$__rate_interval])))",
         "{{target}}", lambda panel: panel.unit("s")),
        ("Average backup duration", "Mean duration of the backups that finished, per target.",
         f"sum by (target) (rate(safehold_backup_duration_seconds_sum{{{TARGETS}}}[$__rate_interval]))"
         f" / sum by (target) (rate(safehold_backup_duration_seconds_count{{{TARGETS}}}[$__rate_interval]))",
         "{{target}}", lambda panel: panel.unit("s")),
        ("Data read per day", "Bytes the backups read from each source per day (what changed or was rescanned).",
         f"sum by (target) (increase(safehold_backup_bytes_read_total{{{TARGETS}}}[1d]))",
         "{{target}}", lambda panel: panel.unit("bytes")),
        ("New data stored per day", "Bytes added to the repository per day after deduplication and compression.",
         f"sum by (target) (increase(safehold_backup_bytes_added_total{{{TARGETS}}}[1d]))",
         "{{target}}", lambda panel: panel.unit("bytes")),
        ("Share of read data that was new", "Bytes added over bytes read: low means deduplication works.",
         f"sum by (target) (increase(safehold_backup_bytes_added_total{{{TARGETS}}}[1d]))"
         f" / sum by (target) (increase(safehold_backup_bytes_read_total{{{TARGETS}}}[1d]) > 0)",
         "{{target}}", lambda panel: panel.unit("percentunit").min(0)),
        ("Backups and failures per hour", "Finished backups, and failed jobs of every kind, per hour.",
         f"sum by (target) (increase(safehold_backup_duration_seconds_count{{{TARGETS}}}[1h]))",
         "{{target}} backups", lambda panel: panel.unit("none").min(0).with_target(query(
             f"sum by (target, kind) (increase(safehold_job_failures_total{{{TARGETS}}}[1h]))",
             "{{target}} {{kind}} failures", ref="B"))),
    ]
    for index, (title, description, expr, legend, finish) in enumerate(panels):
        panel = (
            graph()
            .title(title)
            .description(description)
            .datasource(DATASOURCE)
            .with_target(query(expr, legend))
            .grid_pos(position((index % 2) * 12, (index // 2) * 8, 12, 8))
        )
        board = board.with_panel(finish(panel))
    return board


def capacity() -> dashboard.Dashboard:
    """Repository size against its capacity, and when it will be full at the current growth."""
    board = new_dashboard(
        "safehold-capacity",
        "safehold storage capacity",
        "Repository size against its capacity, growth, and a forecast of when it will be full.",
        "now-30d",
    )
    used = "safehold_repository_stored_bytes / (safehold_repository_capacity_bytes > 0)"
    board = board.with_panel(
        gauge.Panel()
        .title("Repository used")
        .description("Stored bytes over capacity; BackupStorageCapacityHigh fires above 85 %.")
        .datasource(DATASOURCE)
        .with_target(query(used, "used", instant=True))
        .unit("percentunit")
        .min(0)
        .max(1)
        .thresholds(thresholds((None, "green"), (0.75, "orange"), (0.85, "red")))
        .reduce_options(LAST_VALUE)
        .grid_pos(position(0, 0, 6, 7))
    )
    singles = [
        ("Stored", "safehold_repository_stored_bytes", "bytes"),
        ("Capacity", "safehold_repository_capacity_bytes", "bytes"),
        ("Snapshots", "safehold_repository_snapshots", "none"),
    ]
    for index, (title, expr, unit) in enumerate(singles):
        board = board.with_panel(
            stat.Panel()
            .title(title)
            .datasource(DATASOURCE)
            .with_target(query(expr, title, instant=True))
            .unit(unit)
            .graph_mode(common.BigValueGraphMode.AREA)
            .reduce_options(LAST_VALUE)
            .grid_pos(position(6 + index * 4, 0, 4, 7))
        )
    board = board.with_panel(
        stat.Panel()
        .title("Full in (at the last 7 days' growth)")
        .description("Free space divided by the growth rate of the last 7 days; empty while the repository "
                     "does not grow.")
        .datasource(DATASOURCE)
        .with_target(query(
            "(safehold_repository_capacity_bytes - safehold_repository_stored_bytes)"
            " / (deriv(safehold_repository_stored_bytes[7d]) > 0)",
            "full in", instant=True,
        ))
        .unit("s")
        .thresholds(thresholds((None, "red"), (7 * 86400, "orange"), (30 * 86400, "green")))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(LAST_VALUE)
        .grid_pos(position(18, 0, 6, 7))
    )
    board = board.with_panel(
        graph()
        .title("Stored bytes, capacity and 30-day forecast")
        .description("The forecast extrapolates the last 7 days linearly (predict_linear) 30 days ahead.")
        .datasource(DATASOURCE)
        .with_target(query("safehold_repository_stored_bytes", "stored"))
        .with_target(query("safehold_repository_capacity_bytes", "capacity", ref="B"))
        .with_target(query("safehold_repository_capacity_bytes * 0.85", "alert threshold (85 %)", ref="C"))
        .with_target(query("predict_linear(safehold_repository_stored_bytes[7d], 30 * 86400)",
                           "forecast: stored in 30 days", ref="D"))
        .unit("bytes")
        .min(0)
        .grid_pos(position(0, 7, 16, 9))
    )
    board = board.with_panel(
        graph()
        .title("Growth per day")
        .description("Bytes the repository grew per day (negative after a prune).")
        .datasource(DATASOURCE)
        .with_target(query("deriv(safehold_repository_stored_bytes[1d]) * 86400", "growth per day"))
        .with_target(query(f"sum(increase(safehold_backup_bytes_added_total{{{TARGETS}}}[1d]))",
                           "added by backups per day", ref="B"))
        .unit("bytes")
        .grid_pos(position(16, 7, 8, 9))
    )
    board = board.with_panel(
        graph()
        .title("Snapshots")
        .datasource(DATASOURCE)
        .with_target(query("safehold_repository_snapshots", "snapshots"))
        .unit("none")
        .decimals(0)
        .grid_pos(position(0, 16, 24, 6))
    )
    return board


DASHBOARDS: dict[str, Callable[[], dashboard.Dashboard]] = {
    "safehold-overview.json": overview,
    "safehold-backup-trends.json": trends,
    "safehold-capacity.json": capacity,
}


def render(builder: dashboard.Dashboard) -> str:
    return JSONEncoder(sort_keys=True, indent=2).encode(builder.build()) + "\n"


# Keys the SDK (11.6.0) writes on every variable although only interval variables have them;
# Grafana 11.6's schema (monitoring/grafana/schema) defines no such keys on a query variable.
INTERVAL_ONLY_KEYS = ("auto", "auto_count", "auto_min")


def finish(text: str) -> str:
    """Give every panel a stable id in reading order (the SDK leaves ids to Grafana) and drop
    the interval-only keys from query variables."""
    document = json.loads(text)
    for number, panel in enumerate(document["panels"], start=1):
        panel["id"] = number
    for variable in document.get("templating", {}).get("list", []):
        if variable["type"] != "interval":
            for key in INTERVAL_ONLY_KEYS:
                variable.pop(key, None)
    return json.dumps(document, sort_keys=True, indent=2) + "\n"


def build_all() -> dict[str, str]:
    return {name: finish(render(make())) for name, make in DASHBOARDS.items()}


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    arguments = parser.parse_args(list(argv) if argv is not None else None)
    stale = []
    for name, text in build_all().items():
        path = HERE / name
        if arguments.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date, run `python dashboards/build.py`: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
