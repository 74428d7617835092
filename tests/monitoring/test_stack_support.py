"""The stand-ins of stack_support behave like the services they replace, as far as the tests rely
on it: the HTTP recorder answers 200 and keeps JSON bodies by path (Slack's and PagerDuty's
endpoints), the SMTP recorder speaks enough SMTP for a real client and keeps the message."""

from __future__ import annotations

import json
import smtplib
import urllib.request
from email.message import EmailMessage

from stack_support import HTTPRecorder, SMTPRecorder, localized_alertmanager_config


def test_http_recorder_keeps_json_bodies_by_path():
    with HTTPRecorder() as http:
        request = urllib.request.Request(f"{http.url}/slack", data=json.dumps({"text": "hi"}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
        assert http.received("/slack") == [{"text": "hi"}]
        assert http.received("/pagerduty") == []


def test_smtp_recorder_receives_a_message_from_a_real_client():
    with SMTPRecorder() as smtp:
        host, port = smtp.address.split(":")
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "a@example.org", "b@example.org", "digest"
        message.set_content("three alerts")
        with smtplib.SMTP(host, int(port), timeout=5) as client:
            client.send_message(message)
        (received,) = smtp.messages
        assert received["from"] == "<a@example.org>" and received["to"] == ["<b@example.org>"]
        assert "Subject: digest" in received["data"] and "three alerts" in received["data"]


def test_localized_configuration_changes_only_what_points_outside(tmp_path):
    import yaml
    from monitoring_support import ALERTMANAGER

    with HTTPRecorder() as http, SMTPRecorder() as smtp:
        path = localized_alertmanager_config(tmp_path, http=http, smtp=smtp)
    shipped = yaml.safe_load(ALERTMANAGER.read_text())
    local = yaml.safe_load(path.read_text())
    assert [r["name"] for r in local["receivers"]] == [r["name"] for r in shipped["receivers"]]
    assert local["inhibit_rules"] == shipped["inhibit_rules"]
    strip = lambda route: {k: v for k, v in route.items() if k not in ("group_wait", "group_interval")} | (  # noqa: E731
        {"routes": [strip(child) for child in route["routes"]]} if "routes" in route else {})
    assert strip(local["route"]) == strip(shipped["route"])
    assert (tmp_path / "secrets" / "slack_api_url").read_text().strip() == f"{http.url}/slack"
    assert local["global"]["slack_api_url_file"] == str(tmp_path / "secrets" / "slack_api_url")
