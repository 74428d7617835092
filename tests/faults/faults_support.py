"""Helpers of the fault campaigns (issue 13): a fast way to run the real CLI many times,
seeded counts, the one-line figures, and the switch for ``safehold repair``.

Running the CLI. A campaign runs the CLI hundreds (CI) to thousands (large runs) of
times. ``safehold`` spends ~0.6 s of each run importing (SQLAlchemy, alembic, boto3,
pydantic) on this 2-core machine, so by default a campaign runs each command in a
*forked* child of the test process, which has imported the CLI once: the child sets
its own working directory, environment, stdin/stdout/stderr and process group and
calls ``safehold.cli.main.run(argv)``, the function the ``safehold`` console script
calls. It is a separate process with its own pid, exit code, locks, catalog
connection and threads, killed with a real SIGKILL; only the exec and the imports are
skipped. ``SAFEHOLD_CAMPAIGN_EXEC=1`` runs the installed script instead (exactly what a
user runs; about 4x slower). The test process must not run other threads while it forks
(moto and the S3 fault proxy are separate processes for that reason).

Counts. CI sizes are the issue's (30 kills, 200 damage trials); the large runs are
selected with ``-m campaign`` and sized by SAFEHOLD_CAMPAIGN_KILLS and
SAFEHOLD_CAMPAIGN_TRIALS (defaults 500 and 5000); SAFEHOLD_CAMPAIGN_SEED changes the
seed of every campaign.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e_support import CLI, COMMAND_TIMEOUT, Workspace

# --- repair: switched on when `safehold repair` is merged ---------------------------------
#
# `safehold repair index` / `safehold repair snapshots` are written in another branch. The
# campaigns hold their repair parts ready (``test_kill_campaign.repair_round``,
# ``test_damage_campaign.assert_repair_brings_back_the_undamaged``) and run them only when
# this switch is on. ``test_repair_switch_matches_the_cli`` fails as soon as the CLI has a
# `repair` command while the switch is still off, so the merge cannot forget it.
REPAIR_IN_CAMPAIGNS = True


def cli_has_repair() -> bool:
    """Whether the CLI under test has a ``repair`` command (asked the way a user would)."""
    from typer.main import get_command

    from safehold.cli.main import app

    return "repair" in get_command(app).commands  # type: ignore[attr-defined]


# --- counts, seeds, figures -----------------------------------------------------------------


def campaign_seed(default: int) -> int:
    return int(os.environ.get("SAFEHOLD_CAMPAIGN_SEED", default))


def large_count(variable: str, default: int) -> int:
    return int(os.environ.get(variable, default))


def require_campaign_marker(request: pytest.FixtureRequest) -> None:
    """The large runs only run when selected with ``-m campaign`` (like ``-m hostile``)."""
    if "campaign" not in (request.config.option.markexpr or ""):
        pytest.skip("a large fault campaign: select it with -m campaign")


def figures(name: str, **values: object) -> str:
    """The campaign's one line of figures, printed (``pytest -s`` shows it) and returned."""
    line = f"campaign {name}: " + " ".join(f"{key}={_format(value)}" for key, value in values.items())
    print(line, flush=True)
    report = os.environ.get("SAFEHOLD_CAMPAIGN_REPORT")
    if report:
        with open(report, "a") as handle:
            handle.write(line + "\n")
    return line


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, dict):
        return ",".join(f"{k}:{_format(v)}" for k, v in value.items()) or "-"
    return str(value)


# --- running the CLI in forked children -----------------------------------------------------

EXEC = os.environ.get("SAFEHOLD_CAMPAIGN_EXEC") == "1"

# What the commands import lazily; imported once here so that a forked child does not.
_WARM = ("safehold.cli.main", "safehold.engine.backup", "safehold.engine.restore", "safehold.engine.maintenance",
         "safehold.engine.immutability", "safehold.engine.context", "safehold.catalog", "safehold.catalog.store",
         "safehold.repository.check", "safehold.repository.prune", "safehold.repository.backends.local",
         "safehold.repository.backends.s3", "safehold.sources.files", "safehold.sources.image",
         "safehold.restore.directory", "sqlalchemy", "alembic", "boto3", "botocore.session")


def warm_up() -> None:
    import importlib

    for name in _WARM:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


class Forked:
    """A CLI run in a forked child; the subset of ``subprocess.Popen`` the tests use."""

    def __init__(self, args: list[str], cwd: Path, env: dict) -> None:
        self.args = ["safehold", *args]
        self._out = tempfile.TemporaryFile()
        self._err = tempfile.TemporaryFile()
        self.returncode: int | None = None
        self.pid = os.fork()
        if self.pid == 0:  # the child never returns
            _child(list(args), cwd, env, self._out.fileno(), self._err.fileno())

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(0.002)
        return self.returncode

    def send_signal(self, number: int) -> None:
        if self.returncode is None:
            try:
                os.killpg(self.pid, number)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.wait()
            raise
        return self._read(self._out), self._read(self._err)

    @staticmethod
    def _read(handle) -> str:
        handle.seek(0)
        text = handle.read().decode("utf-8", "surrogateescape")
        handle.close()
        return text


def _child(args: list[str], cwd: Path, env: dict, out: int, err: int) -> None:
    code = 70
    try:
        os.setpgid(0, 0)  # its own group: a kill reaches every thread and child it has
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="surrogateescape",
                                      line_buffering=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="surrogateescape",
                                      line_buffering=True)
        sys.argv = ["safehold", *args]
        # pytest's log capture and warning filters are the test process's, not a user's.
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        warnings.resetwarnings()
        warnings.simplefilter("ignore", DeprecationWarning)
        from safehold.cli.main import run

        try:
            run(args)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


class CampaignWorkspace(Workspace):
    """An e2e workspace whose CLI runs are forked children (see the module docstring)."""

    def start(self, *args: str, password: str | None = None, env: dict | None = None):
        started = time.monotonic()
        if EXEC:
            process = super().start(*args, password=password, env=env)
        else:
            process = Forked([str(a) for a in args], self.root, self.environment(password, env))
        process.started, process.command_name = started, str(args[0]) if args else "?"
        return process

    def execute(self, args: tuple, password: str | None, env: dict | None, timeout: float) -> subprocess.CompletedProcess:
        if EXEC:
            return super().execute(args, password, env, timeout)
        outcome = finish(self.start(*args, password=password, env=env), timeout)
        return subprocess.CompletedProcess(["safehold", *args], outcome.code, outcome.stdout, outcome.stderr)


def make_campaign_workspace(root: Path, targets: list[dict] | None = None,
                            repository_url: str = "repo") -> CampaignWorkspace:
    root.mkdir(parents=True, exist_ok=True)
    workspace = CampaignWorkspace(root)
    workspace.data.mkdir(exist_ok=True)
    workspace.write_config(targets=targets, repository_url=repository_url)
    return workspace


# --- the S3 fault proxy ------------------------------------------------------------------


class FaultProxy:
    """``s3_fault_proxy.py`` in its own process, in front of ``upstream`` (the moto server)."""

    def __init__(self, upstream: str, seed: int, rate: float, stall: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve().parent / "s3_fault_proxy.py"), "--upstream", upstream,
             "--seed", str(seed), "--rate", str(rate), "--stall", str(stall)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        assert line.startswith("PORT "), f"the fault proxy did not start: {line!r}"
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    def control(self, path: str, method: str = "POST") -> dict:
        request = urllib.request.Request(f"{self.url}/_faults/{path}", method=method, data=b"" if method == "POST"
                                         else None)
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def stats(self) -> dict:
        return self.control("stats", "GET")

    def stop(self) -> None:
        import moto_support

        moto_support.stop_process(self.process)



@dataclass
class Outcome:
    """How one run ended: ``code`` (negative: killed by that signal), its output."""
    code: int
    stdout: str
    stderr: str

    @property
    def traceback(self) -> bool:
        return "Traceback" in self.stderr or "internal error" in self.stderr


# Seconds spent per command (by its first argument), for the figures.
SPENT: Counter = Counter()


def finish(process, timeout: float = COMMAND_TIMEOUT) -> Outcome:
    stdout, stderr = process.communicate(timeout=timeout)
    started = getattr(process, "started", None)
    if started is not None:
        SPENT[process.command_name] += time.monotonic() - started
    return Outcome(process.returncode, stdout, stderr)


__all__ = ["CLI", "CampaignWorkspace", "EXEC", "FaultProxy", "Forked", "SPENT", "Outcome", "REPAIR_IN_CAMPAIGNS", "campaign_seed",
           "cli_has_repair", "figures", "finish", "large_count", "make_campaign_workspace", "require_campaign_marker",
           "warm_up"]
