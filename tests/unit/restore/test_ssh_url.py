"""``--to ssh://...``: the URL's parts, what is refused, and where the connection facts come from."""

from __future__ import annotations

import pytest

from safehold import errors
from safehold.engine.context import Context
from safehold.engine.restore import _spec, ssh_settings
from safehold.restore.ssh import parse_url


def test_parse_url() -> None:
    assert parse_url("ssh://backup@web-01:2222/srv/restore/") == ("web-01", "backup", 2222, "/srv/restore")
    assert parse_url("ssh://web-01/srv/r%20x") == ("web-01", None, None, "/srv/r x")


@pytest.mark.parametrize("url", ["ssh://web-01", "ssh://web-01:99999/x", "ssh://web-01/srv/../etc", "sftp://h/x",
                                 "ssh:///srv"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(errors.UsageError):
        parse_url(url)


def test_a_string_destination_starting_with_ssh_is_an_ssh_spec() -> None:
    spec = _spec("ssh://h/x", ["etc"], True, False, False)
    assert spec == {"kind": "ssh", "url": "ssh://h/x", "includes": ["etc"], "overwrite": True, "special_files": False}


def test_connection_facts_come_from_an_ssh_target_of_the_same_host(tmp_path) -> None:
    config = tmp_path / "targets.yml"
    config.write_text(
        "repository: {url: /srv/repo}\n"
        "targets:\n"
        "  - {name: a, tier: 2, source: {type: ssh, host: web-01, user: backup, port: 2200, paths: [/etc],\n"
        "     identity_file: /k, known_hosts: /kh}}\n")
    context = Context.load(config)
    settings, path = ssh_settings(context, "ssh://web-01/srv/restore")
    assert (settings.user, settings.port, settings.identity_file, settings.known_hosts, path) == (
        "backup", 2200, "/k", "/kh", "/srv/restore")
    # Another user than the target's, or another host: not that target's key but the user's defaults.
    for url in ("ssh://root@web-01/x", "ssh://root@web-02:22/x"):
        other, _ = ssh_settings(context, url)
        assert (other.user, other.port, other.identity_file, other.known_hosts) == ("root", 22, None, None)
