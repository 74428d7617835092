"""Run the real monitoring programs for a test: Debian's ``prometheus-alertmanager`` and
``prometheus`` on loopback, with the shipped configuration, plus stand-ins for the outside
world that cannot be reached from here: ``HTTPRecorder`` takes the place of the Slack and
PagerDuty endpoints (it records what Alertmanager's real Slack and PagerDuty notifiers POST)
and ``SMTPRecorder`` the mail relay of the e-mail digest (a minimal SMTP server that keeps
each message). Every process is stopped by PID when its context ends.

``localized_alertmanager_config`` keeps the routing tree, receivers, templates and inhibition of
monitoring/alertmanager/alertmanager.yml and changes only what points outside: the secret files
(written into the test folder, the Slack one holding the recorder's URL), the PagerDuty events
URL, the SMTP relay (plain, no TLS, on loopback) and the waiting times (seconds, not minutes).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import socketserver
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from monitoring_support import ALERTMANAGER, RULES, tool


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition: Callable[[], Any], timeout: float, interval: float = 0.25, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def http_json(url: str, data: object | None = None, timeout: float = 5) -> Any:
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        text = response.read()
    return json.loads(text) if text else None


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


# --- stand-ins for Slack, PagerDuty and the mail relay ----------------------------------------


@dataclass
class Delivery:
    path: str
    body: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class HTTPRecorder:
    """An HTTP server on loopback that answers 200 to every POST and records its JSON body by path."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"raw": raw.decode(errors="replace")}
                with recorder._lock:
                    recorder.deliveries.append(Delivery(self.path, body))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true, "status": "success"}')

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> HTTPRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def received(self, path: str) -> list[dict[str, Any]]:
        with self._lock:
            return [delivery.body for delivery in self.deliveries if delivery.path == path]


class SMTPRecorder:
    """A minimal SMTP server (RFC 5321 commands Alertmanager uses) that keeps every message."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        recorder = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                def reply(line: str) -> None:
                    self.wfile.write(line.encode() + b"\r\n")

                reply("220 localhost safehold-test SMTP")
                envelope: dict[str, Any] = {"from": None, "to": [], "data": ""}
                while raw := self.rfile.readline():
                    command = raw.decode(errors="replace").rstrip("\r\n")
                    verb = command.split(" ", 1)[0].upper()
                    if verb in ("EHLO", "HELO"):
                        reply("250 localhost")
                    elif verb == "MAIL":
                        envelope = {"from": command[10:].strip(), "to": [], "data": ""}
                        reply("250 OK")
                    elif verb == "RCPT":
                        envelope["to"].append(command[8:].strip())
                        reply("250 OK")
                    elif verb == "DATA":
                        reply("354 end with <CRLF>.<CRLF>")
                        lines = []
                        while (line := self.rfile.readline()) not in (b".\r\n", b""):
                            lines.append(line.decode(errors="replace"))
                        envelope["data"] = "".join(lines)
                        recorder.messages.append(envelope)
                        reply("250 OK queued")
                    elif verb == "QUIT":
                        reply("221 bye")
                        return
                    else:  # RSET, NOOP; no AUTH or STARTTLS advertised, so none are attempted
                        reply("250 OK")

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> SMTPRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


# --- the real programs --------------------------------------------------------------------------


class Process:
    """A program started in its own process group, stopped by PID (SIGTERM, then SIGKILL)."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None):
        self.log = log
        self._log_file = log.open("wb")
        self.popen = subprocess.Popen(argv, stdout=self._log_file, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                      start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def assert_running(self) -> None:
        assert self.popen.poll() is None, f"{self.popen.args[0]} exited:\n{self.output()[-3000:]}"

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=15)
        self._log_file.close()


def localized_alertmanager_config(folder: Path, *, http: HTTPRecorder, smtp: SMTPRecorder,
                                  wait: str = "1s") -> Path:
    """The shipped alertmanager.yml pointed at the recorders, written into ``folder``."""
    config = yaml.safe_load(ALERTMANAGER.read_text())
    secrets = folder / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    (secrets / "slack_api_url").write_text(f"{http.url}/slack\n")
    (secrets / "pagerduty_routing_key").write_text("test-routing-key\n")
    (secrets / "smtp_password").write_text("test-smtp-password\n")

    def relocate(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("/run/secrets/"):
            return str(secrets / value.removeprefix("/run/secrets/"))
        if isinstance(value, dict):
            return {key: relocate(item) for key, item in value.items()}
        if isinstance(value, list):
            return [relocate(item) for item in value]
        return value

    config = relocate(config)
    config["templates"] = [str(ALERTMANAGER.parent / pattern) for pattern in config["templates"]]
    config["global"].update(smtp_smarthost=smtp.address, smtp_require_tls=False)
    for receiver in config["receivers"]:
        for pagerduty in receiver.get("pagerduty_configs", []):
            pagerduty["url"] = f"{http.url}/pagerduty"

    def shorten(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval"):
            if key in route:
                route[key] = wait
        for child in route.get("routes", []):
            shorten(child)

    shorten(config["route"])
    path = folder / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@contextlib.contextmanager
def alertmanager(folder: Path, config: Path) -> Iterator[str]:
    """Start prometheus-alertmanager with ``config``; yields its base URL."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = Process(
        [tool("prometheus-alertmanager"), f"--config.file={config}", f"--storage.path={folder / 'am-data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=debug"],
        folder / "alertmanager.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: process.assert_running() or http_ok(f"{url}/-/ready"), 30, what="alertmanager ready")
        yield url
    finally:
        process.stop()


@contextlib.contextmanager
def prometheus(folder: Path, *, scrape_target: str, alertmanager_url: str, interval: str = "1s",
               rules: Path = RULES) -> Iterator[str]:
    """Start Debian's prometheus scraping ``scrape_target`` (host:port) as job "safehold",
    evaluating the shipped rules; yields its base URL."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [str(rules)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager_url.removeprefix("http://")]}]}]},
        "scrape_configs": [{"job_name": "safehold", "static_configs": [{"targets": [scrape_target]}]}],
    }
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    process = Process(
        [tool("prometheus"), f"--config.file={path}", f"--storage.tsdb.path={folder / 'prom-data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        folder / "prometheus.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: process.assert_running() or http_ok(f"{url}/-/ready"), 60, what="prometheus ready")
        yield url
    finally:
        process.stop()


def post_alerts(alertmanager_url: str, alerts: list[dict[str, Any]]) -> None:
    """Send alerts the way Prometheus does (labels + annotations) through the v2 API."""
    http_json(f"{alertmanager_url}/api/v2/alerts", [
        {"labels": alert["labels"], "annotations": alert.get("annotations", {}),
         "generatorURL": "http://prometheus.invalid/graph"} for alert in alerts
    ])
