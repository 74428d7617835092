"""Target status (engine.status): age of the last good backup against the tier's RPO and the
last restore test's ART against the RTO, from the catalog."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from control_support import FakeClock, files_target, make_context
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from safehold.engine.jobs import run_job, submit_job
from safehold.engine.status import StatusCache, target_statuses
from safehold.server.metrics import MetricsExposition, create_registry


def test_status_follows_backups_failures_and_restore_tests(tmp_path: Path, clock: FakeClock) -> None:
    targets = [files_target(tmp_path, "web", tier=1, restore_test={"health_check": {
                   "type": "file_exists", "path": "web/hostname"}}),
               files_target(tmp_path, "docs", tier=3)]
    context = make_context(tmp_path / "ws", targets, clock=clock)
    never = {entry.name: entry for entry in target_statuses(context, clock.now)}
    assert never["web"].last_success is None and never["web"].compliant is False
    assert never["web"].age_seconds is None and never["web"].last_status is None
    assert (never["web"].rpo_seconds, never["web"].rto_seconds) == (900, 3600)
    assert (never["docs"].tier, never["docs"].source_type, never["docs"].rpo_seconds) == (3, "files", 86400)

    backed_up = clock.now
    run_job(context, submit_job(context, "backup", "web"))
    run_job(context, submit_job(context, "restore-test", "web"))
    clock.advance(minutes=10)
    web = target_statuses(context, clock.now)[0]
    assert web.last_success == backed_up and web.age_seconds == 600 and web.compliant
    assert web.last_status == "succeeded"
    assert web.last_restore_test is not None and web.last_restore_test.passed and web.last_restore_test.rto_met
    assert web.last_restore_test.art_seconds is not None and web.last_restore_test.rto_seconds == 3600

    # A failed backup later: the last good one ages past the RPO.
    clock.advance(minutes=6)
    Path(targets[0]["source"]["paths"][0], "hostname").unlink()
    Path(targets[0]["source"]["paths"][0]).rmdir()
    run_job(context, submit_job(context, "backup", "web"))
    web = target_statuses(context, clock.now)[0]
    assert web.last_status == "failed" and web.last_attempt == clock.now
    assert web.age_seconds == 960 and not web.compliant
    data = web.as_dict()
    json.dumps(data)  # JSON-able as the API and --json print it
    assert set(data) == {"name", "tier", "source_type", "rpo_seconds", "rto_seconds", "last_success",
                         "last_attempt", "last_status", "age_seconds", "compliant", "last_restore_test",
                         "skipped_items", "copies", "art", "ransomware"}
    assert set(data["last_restore_test"]) == {"time", "passed", "art_seconds", "rto_seconds", "rto_met"}
    assert data["art"]["state"] == "ok" and len(data["art"]["history"]) == 1
    assert data["art"]["history"][0]["kind"] == "restore-test"
    assert data["last_success"] == backed_up.isoformat()


def test_cached_snapshots_count_as_good_backups(tmp_path: Path, clock: FakeClock) -> None:
    context = make_context(tmp_path / "ws", [files_target(tmp_path, "web")], clock=clock)
    taken = clock.now - dt.timedelta(minutes=3)
    context.catalog.replace_snapshots("repo", [{"id": "a" * 64, "time": taken, "target": "web"}])
    web = target_statuses(context, clock.now)[0]
    assert web.last_success == taken and web.compliant and web.last_status is None


def test_a_partial_backup_is_good_for_the_rpo_and_says_what_it_skipped(tmp_path: Path, clock: FakeClock) -> None:
    context = make_context(tmp_path / "ws", [files_target(tmp_path, "web")], clock=clock)
    catalog = context.catalog
    job = catalog.start_job("backup", "web")
    clock.advance(minutes=1)
    catalog.finish_job(job, "partial", details={"skipped": {"count": 7, "reasons": {"unreadable": 7}}})
    finished = clock.now
    clock.advance(minutes=2)
    web = target_statuses(context, clock.now)[0]
    assert (web.last_status, web.skipped_items, web.last_success, web.compliant) == ("partial", 7, finished, True)
    assert web.as_dict()["skipped_items"] == 7

    catalog.start_job("backup", "web")  # running: the newest finished one still tells what was skipped
    assert target_statuses(context, clock.now)[0].skipped_items == 7
    catalog.finish_job(catalog.list_jobs(status="running")[0].id, "failed")
    web = target_statuses(context, clock.now)[0]
    assert (web.last_status, web.skipped_items, web.last_success) == ("failed", 0, finished)


# --- batched queries ---------------------------------------------------------------


def fill(context, clock: FakeClock, names: list[str]) -> None:
    """A varied history: per target some backups (the newest failed, running or queued for some),
    restore tests (passed, failed, cancelled), cached snapshots in two repositories; plus
    repository-wide jobs and a snapshot of a target no longer configured."""
    catalog = context.catalog
    outcomes = ("succeeded", "failed", "interrupted", "cancelled")
    for index, name in enumerate(names):
        attempts = 0 if index % 6 == 0 else 1 + index % 3
        for attempt in range(attempts):  # the newest ends outcomes[index % 4]
            clock.advance(minutes=1)
            status = outcomes[(index - attempts + 1 + attempt) % 4]
            catalog.finish_job(catalog.start_job("backup", name), status, bytes_read=7)
        if index % 6 == 1:
            catalog.start_job("backup", name)  # running now
        if index % 6 == 4:
            catalog.queue_job("backup", name)
        for test in range(index % 3):
            clock.advance(minutes=1)
            job_id = catalog.start_job("restore-test", name)
            status = ("succeeded", "failed", "cancelled")[(index + test) % 3]
            catalog.finish_job(job_id, status, details={"art_seconds": 10.0 + index, "passed": status == "succeeded",
                                                        "rto_seconds": 3600})
    catalog.finish_job(catalog.start_job("prune"), "succeeded")
    for repository, offset in (("repo-a", 0), ("repo-b", 7)):
        catalog.replace_snapshots(repository, [
            {"id": f"{repository}-{name}", "target": name, "time": clock.now - dt.timedelta(minutes=index + offset)}
            for index, name in enumerate(names) if index % 3 != 0] + [
            {"id": f"{repository}-gone", "target": "gone", "time": clock.now}])


def reference_statuses(context, now: dt.datetime) -> list[dict]:
    """What target_statuses computed before it was batched: per target, newest rows one query each."""
    catalog = context.catalog
    result = []
    for target in context.config.targets:
        tier = context.config.tier_of(target)
        backups = catalog.list_jobs(target=target.name, kind="backup", limit=1)
        succeeded = catalog.list_jobs(target=target.name, kind="backup", status="succeeded", limit=1)
        last_success = (succeeded[0].finished_at or succeeded[0].created_at) if succeeded else None
        snapshots = catalog.list_snapshots(target=target.name, limit=1)
        if snapshots and (last_success is None or snapshots[0].time > last_success):
            last_success = snapshots[0].time
        tests = catalog.list_jobs(target=target.name, kind="restore-test",
                                  status=("succeeded", "failed", "interrupted"), limit=1)
        result.append({
            "name": target.name,
            "last_success": last_success.isoformat() if last_success else None,
            "last_attempt": ((backups[0].started_at or backups[0].created_at).isoformat() if backups else None),
            "last_status": backups[0].status if backups else None,
            "age_seconds": round((now - last_success).total_seconds(), 3) if last_success else None,
            "compliant": last_success is not None and (now - last_success) <= tier.rpo,
            "last_restore_test": ({"time": (tests[0].finished_at or tests[0].created_at).isoformat(),
                                   "passed": tests[0].status == "succeeded"} if tests else None),
        })
    return result


def test_batched_status_equals_the_newest_rows_of_each_target(tmp_path: Path, clock: FakeClock) -> None:
    names = [f"t{index}" for index in range(12)]
    context = make_context(tmp_path / "ws", [files_target(tmp_path, name) for name in names], clock=clock, init=False)
    fill(context, clock, names)
    clock.advance(minutes=5)
    expected = reference_statuses(context, clock.now)
    got = []
    for entry in target_statuses(context, clock.now):
        data = entry.as_dict()
        test = data["last_restore_test"]
        got.append({key: data[key] for key in expected[0] if key != "last_restore_test"}
                   | {"last_restore_test": {"time": test["time"], "passed": test["passed"]} if test else None})
    assert got == expected
    # The history is varied enough to mean something: every kind of answer occurs.
    assert {entry["last_status"] for entry in got} == {None, *("succeeded", "failed", "interrupted", "cancelled"),
                                                       "running", "queued"}
    assert {entry["compliant"] for entry in got} == {True, False}
    assert {None, True, False} == {entry["last_restore_test"] and entry["last_restore_test"]["passed"]
                                   for entry in got} | {None}


def count_selects(engine):
    from sqlalchemy import event

    statements: list[str] = []

    def record(connection, cursor, statement, *args) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    return statements, lambda: event.remove(engine, "before_cursor_execute", record)


def test_status_and_a_metrics_scrape_take_as_many_queries_for_30_targets_as_for_3(tmp_path: Path,
                                                                                 clock: FakeClock) -> None:
    from prometheus_client import generate_latest

    from safehold.server.metrics import create_registry

    counts = {}
    for size in (3, 30):
        names = [f"t{index}" for index in range(size)]
        root = tmp_path / f"ws{size}"
        context = make_context(root, [files_target(root, name) for name in names], clock=clock, init=False)
        fill(context, clock, names)
        registry = create_registry(context, repository_ttl=3600)
        generate_latest(registry)  # the (failing: no repository here) listing is cached from now on
        statements, stop = count_selects(context.catalog.engine)
        target_statuses(context, clock.now)
        status_queries = len(statements)
        generate_latest(registry)
        stop()
        counts[size] = (status_queries, len(statements) - status_queries)
        context.close()
    assert counts[3] == counts[30], counts
    # newest backup, newest good backup, newest finished backup (what it skipped), newest snapshot, newest test,
    # the ART history's restore tests and drills, the newest mark and newest scan (the ransomware state;
    # the good backup's is reused)
    assert counts[3][0] == 9, counts


def record_test(context, clock: FakeClock, target: str, art: float, *, passed: bool = True, rto: float = 3600) -> None:
    clock.advance(hours=1)
    catalog = context.catalog
    catalog.finish_job(catalog.start_job("restore-test", target), "succeeded" if passed else "failed",
                       details={"art_seconds": art, "passed": passed, "rto_seconds": rto})


def record_drill(context, clock: FakeClock, steps: list[dict], *, passed: bool = True) -> None:
    clock.advance(hours=1)
    catalog = context.catalog
    catalog.finish_job(catalog.start_job("drill", None, {"drill": "site-lost", "scenario": "on-prem-host-failure"}),
                       "succeeded" if passed else "failed", details={"drill": "site-lost", "passed": passed,
                                                                     "steps": steps})


def test_art_history_merges_restore_tests_and_drill_steps_and_judges_the_rto(tmp_path: Path,
                                                                               clock: FakeClock) -> None:
    """Tier 1: RTO 1h. The trend is read from the catalog's restore-test and drill jobs, newest first."""
    context = make_context(tmp_path / "ws", [files_target(tmp_path, "web", tier=1),
                                             files_target(tmp_path, "db", tier=1),
                                             files_target(tmp_path, "docs", tier=3)], clock=clock, init=False)

    def art(name: str):
        return next(entry.art for entry in target_statuses(context, clock.now) if entry.name == name)

    assert art("web").state == "unmeasured" and art("web").latest is None and art("web").trend is None
    # Three fast recoveries (at most 25 % of the RTO): the RTO could be tightened.
    for seconds in (600, 700, 800):
        record_test(context, clock, "web", seconds)
    assert art("web").state == "could-tighten" and art("web").trend == "steady"
    # A drill step for web (ART from the drill's start) and db; a skipped step and an unknown target count
    # for nothing, nor does a row with a hostile value.
    record_drill(context, clock, [
        {"target": "web", "outcome": "passed", "art_seconds": 2000.0, "rto_seconds": 3600.0},
        {"target": "db", "outcome": "skipped", "art_seconds": None, "rto_seconds": 3600.0},
        {"target": "gone", "outcome": "passed", "art_seconds": 5.0, "rto_seconds": 3600.0},
        {"target": "docs", "outcome": "passed", "art_seconds": "NaN", "rto_seconds": 3600.0},
        "not a step"])
    web = art("web")
    assert [sample.kind for sample in web.samples] == ["drill", "restore-test", "restore-test", "restore-test"]
    assert web.latest.art_seconds == 2000 and web.latest.drill == "site-lost"
    assert web.state == "ok" and web.trend == "rising"
    assert art("db").samples == () and art("docs").samples == ()
    # At 80 % of the RTO: approaching (RTOApproaching); a failed run after it judges nothing.
    record_test(context, clock, "web", 2880)
    record_test(context, clock, "web", 120, passed=False)
    web = art("web")
    assert web.state == "approaching" and web.latest.art_seconds == 2880
    assert web.samples[0].passed is False and web.samples[0].art_seconds == 120
    # Above the RTO: at risk; exactly the RTO is still only approaching.
    record_test(context, clock, "web", 3600)
    assert art("web").state == "approaching"
    record_test(context, clock, "web", 3601)
    assert art("web").state == "at-risk"
    # The history is bounded, newest first, and JSON-able as status --json and the API print it.
    for _ in range(12):
        record_test(context, clock, "web", 900)
    data = art("web").as_dict()
    json.dumps(data)
    assert len(data["history"]) == 10 and data["latest_seconds"] == 900 and data["rto_ratio"] == 0.25
    assert data["state"] == "could-tighten" and data["max_seconds"] == 900
    assert [entry["time"] for entry in data["history"]] == sorted((entry["time"] for entry in data["history"]),
                                                                  reverse=True)


# --- StatusCache and MetricsExposition: computed once per catalog change, ages always of the moment ---


def samples(text: bytes) -> set[tuple]:
    return {(sample.name, tuple(sorted(sample.labels.items())), sample.value)
            for family in text_string_to_metric_families(text.decode()) for sample in family.samples}


def test_statuses_are_computed_again_only_when_the_catalog_changed(tmp_path: Path, clock: FakeClock) -> None:
    names = [f"t{index}" for index in range(6)]
    context = make_context(tmp_path / "ws", [files_target(tmp_path, name) for name in names], clock=clock, init=False)
    fill(context, clock, names)
    cache = StatusCache(context)
    first = cache.statuses(clock.now)
    assert [entry.as_dict() for entry in first] == [entry.as_dict() for entry in target_statuses(context, clock.now)]
    statements, stop = count_selects(context.catalog.engine)
    clock.advance(minutes=20)
    later = cache.statuses(clock.now)
    stop()
    assert cache.computed == 1
    assert len(statements) <= 4  # the change marker alone (its tail only while jobs are active)
    # Cached, yet the ages and the RPO compliance are those of now (20 minutes older: a 15m RPO missed).
    assert [entry.as_dict() for entry in later] == [entry.as_dict() for entry in target_statuses(context, clock.now)]
    assert any(before.compliant and not after.compliant for before, after in zip(first, later))

    context.catalog.finish_job(context.catalog.start_job("backup", "t0"), "succeeded")
    fresh = cache.statuses(clock.now)
    assert cache.computed == 2
    assert fresh[0].compliant and fresh[0].age_seconds == 0.0


def test_the_cached_metrics_text_is_the_collectors_until_the_catalog_changes(tmp_path: Path,
                                                                              clock: FakeClock) -> None:
    names = [f"t{index}" for index in range(6)]
    context = make_context(tmp_path / "ws", [files_target(tmp_path, name) for name in names], clock=clock, init=False)
    fill(context, clock, names)
    exposition = MetricsExposition(context, statuses=StatusCache(context), repository_ttl=3600)
    registry = create_registry(context, repository_ttl=3600)
    assert samples(exposition.render()) == samples(generate_latest(registry))

    statements, stop = count_selects(context.catalog.engine)
    again = exposition.render()
    stop()
    assert exposition.rendered == 1
    assert len(statements) <= 4, statements  # the change marker; the repository listing is cached
    assert samples(again) == samples(generate_latest(registry))

    job = context.catalog.start_job("backup", "t1")
    running = exposition.render()
    assert exposition.rendered == 2
    assert samples(running) == samples(generate_latest(registry))

    def backups_running(text: bytes) -> float:
        return next(value for name, labels, value in samples(text)
                    if name == "safehold_jobs_running" and labels == (("kind", "backup"),))

    assert backups_running(running) == backups_running(again) + 1
    clock.advance(minutes=1)
    context.catalog.finish_job(job, "succeeded")
    finished = exposition.render()
    assert exposition.rendered == 3
    assert samples(finished) == samples(generate_latest(registry))
    when = clock.now.timestamp()
    assert any(name == "safehold_backup_last_success_timestamp_seconds" and ("target", "t1") in labels
               and value == when for name, labels, value in samples(finished))


def test_the_safety_net_recomputes_after_max_age_even_without_a_change(tmp_path: Path, clock: FakeClock) -> None:
    context = make_context(tmp_path / "ws", [files_target(tmp_path, "t0")], clock=clock, init=False)
    ticks = [0.0]
    cache = StatusCache(context, max_age=60, clock=lambda: ticks[0])
    cache.statuses(clock.now)
    ticks[0] = 59.0
    cache.statuses(clock.now)
    assert cache.computed == 1
    ticks[0] = 61.0
    cache.statuses(clock.now + dt.timedelta(seconds=61))
    assert cache.computed == 2
