"""The drill's evidence report as an auditor opens it: report.html of a real (files-only) drill
run, rendered by Debian's headless chromium through Playwright (pip ``playwright``, its bundled
driver, no downloaded browser; installed by scripts/services.d/chromium.sh).

Asserted: no console message of any level (the page's CSP reports every blocked resource
there), no request beyond the page itself (self-contained: nothing fetched, nothing phoned
home), the content a reader needs is visible, and a screenshot is taken. A report whose values
carry markup (a drill description with a script and an image) renders them as text.

Set SAFEHOLD_REPORT_SCREENSHOT=PATH to keep the screenshot (docs/images/drill-report.png was
made so: see docs/design/drills.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from test_drill import with_drills

CHROMIUM = "/usr/bin/chromium"
#: Launch arguments for a root user in a container without a GPU (../shared/TESTBED.md).
LAUNCH_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]


def render(page_path: Path, screenshot: Path) -> dict:
    """Open ``page_path`` in headless chromium; what it logged, requested, showed, and a screenshot."""
    from playwright.sync_api import sync_playwright

    assert shutil.which("chromium") or Path(CHROMIUM).exists(), \
        "chromium is missing: run `bash scripts/services.d/chromium.sh install`"
    url = page_path.resolve().as_uri()
    seen: dict = {"console": [], "requests": [], "errors": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 700})
            page.on("console", lambda message: seen["console"].append(f"{message.type}: {message.text}"))
            page.on("pageerror", lambda error: seen["errors"].append(str(error)))
            page.on("request", lambda request: seen["requests"].append(request.url))
            page.goto(url, wait_until="load")
            page.wait_for_load_state("networkidle")
            seen["title"] = page.title()
            seen["h1"] = page.locator("h1").inner_text()
            seen["text"] = page.locator("body").inner_text()
            seen["step_rows"] = page.locator("table").first.locator("tr").count() - 1  # minus the header
            seen["visible"] = {word: page.get_by_text(word, exact=True).first.is_visible()
                               for word in ("passed", "met")}
            seen["scripts"] = page.evaluate("document.scripts.length")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    seen["url"] = url
    return seen


def test_the_html_report_of_a_real_drill_renders_clean_in_chromium(workspace, tmp_path: Path) -> None:
    with_drills(workspace, hashlib.sha256(b"1,orders\n").hexdigest())
    workspace.run("init")
    workspace.run("backup", "--all")
    ran = workspace.run("drill", "run", "site-lost")
    folder = Path(ran.stdout.strip().splitlines()[-1].rpartition("evidence report in ")[2])
    evidence = json.loads((folder / "report.json").read_text())

    screenshot = tmp_path / "drill-report.png"
    seen = render(folder / "report.html", screenshot)
    assert seen["console"] == [] and seen["errors"] == [], seen
    assert seen["requests"] == [seen["url"]], seen["requests"]  # the page itself, nothing else
    assert seen["title"] == "Drill report: site-lost" and seen["h1"] == "Drill report: site-lost"
    assert seen["step_rows"] == 2 and seen["visible"] == {"passed": True, "met": True}
    text = seen["text"]
    assert "on_prem_host_failure" in text and f"Catalog job {evidence['job_id']}" in text
    for step in evidence["steps"]:
        assert step["target"] in text and step["snapshot_id"][:12] in text
        assert step["started"] in text and step["ended"] in text
    for item in evidence["created"]:  # every sandbox folder is listed as created and removed
        assert item["name"] in text
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000
    keep = os.environ.get("SAFEHOLD_REPORT_SCREENSHOT")
    if keep:
        shutil.copyfile(screenshot, keep)


def test_markup_in_a_report_stays_text_and_fetches_nothing(tmp_path: Path) -> None:
    """Drill names come from targets.yml and details from snapshots: hostile. The page escapes them
    (and its CSP would block what slipped through, with a console error that the test would see)."""
    from safehold.engine.drill import write_report

    hostile = "<script>console.error('ran')</script><img src=\"http://127.0.0.1:9/x.png\">"
    evidence = {
        "format": "safehold-drill-report/1", "drill": "d<b>x</b>", "scenario": "data_corruption_recovery",
        "runbook": "runbooks/data_corruption_recovery.md", "description": hostile, "job_id": 7,
        "started": "2026-12-07T04:00:00+00:00", "ended": "2026-12-07T04:00:05+00:00", "duration_seconds": 5.0,
        "reference_time": "2026-12-07T04:00:00+00:00", "before": None, "sandbox_directory": "/tmp/x",
        "waves": [["web"]], "passed": False,
        "steps": [{"target": "web", "after": [], "snapshot_id": "a" * 64, "started": "s", "ended": "e",
                   "outcome": "failed", "art_seconds": 1.0, "rto_seconds": 60.0, "rto_met": False,
                   "rpo_seconds": 5.0, "rpo_objective_seconds": 900.0, "rpo_met": True, "check": hostile,
                   "detail": hostile, "created": [], "removed": []}],
        "created": [{"kind": "sandbox folder", "name": hostile}], "removed": [], "left_behind": [],
        "leftovers_removed": [],
    }
    written = write_report(evidence, tmp_path / "report")
    seen = render(written["html"], tmp_path / "hostile.png")
    assert seen["console"] == [] and seen["errors"] == [], seen
    assert seen["requests"] == [seen["url"]] and seen["scripts"] == 0
    assert seen["h1"] == "Drill report: d<b>x</b>" and hostile in seen["text"]

