"""The ssh source's configuration: what it accepts and how it names what it refuses."""

from __future__ import annotations

import textwrap

import pytest

from safehold.config import load_config_text
from safehold.config.models import PLANNED_SOURCE_TYPES, SOURCE_TYPES
from safehold.errors import ConfigError


def load(source: str):
    text = textwrap.dedent(f"""\
        repository: {{url: /srv/repo}}
        targets:
          - name: web-01
            tier: 2
            source: {source}
        """)
    return load_config_text(text, "/etc/safehold/targets.yml", environ={})


def problem(source: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(source)
    assert len(caught.value.problems) == 1, caught.value.problems
    return caught.value.problems[0]


def test_ssh_is_supported_now() -> None:
    assert "ssh" in SOURCE_TYPES and "ssh" not in PLANNED_SOURCE_TYPES
    config = load("{type: ssh, host: web-01.internal, user: backup, paths: [/etc, /var/www/], "
                  "identity_file: keys/id_ed25519, known_hosts: known_hosts, exclude: ['*.tmp']}")
    source = config.targets[0].source
    assert (source.host, source.user, source.port) == ("web-01.internal", "backup", 22)
    assert source.paths == ["/etc", "/var/www"]
    # Relative files are relative to the configuration's folder, like every path in it.
    assert source.identity_file == "/etc/safehold/keys/id_ed25519"
    assert source.known_hosts == "/etc/safehold/known_hosts"


@pytest.mark.parametrize(("source", "expected"), [
    ("{type: ssh, host: h, user: u, paths: [etc]}", "'etc' is not an absolute path on the host"),
    ("{type: ssh, host: h, user: u, paths: [/etc], identity_file: /k, identity_env: KEY}",
     "give identity_file or identity_env, not both"),
    ("{type: ssh, host: h, user: u, paths: [/etc], identity_env: 'no-such name'}",
     "is not an environment variable name"),
    ("{type: ssh, host: h, user: u, paths: [/etc], host_key: 'AAAA'}", "is not an OpenSSH public key"),
    ("{type: ssh, host: '-oProxyCommand=x', user: u, paths: [/etc]}", "is not a host or user name"),
    ("{type: ssh, host: h, user: u, paths: [/etc], port: 0}", "port"),
])
def test_bad_ssh_sources_are_named(source: str, expected: str) -> None:
    found = problem(source)
    assert found.startswith("/etc/safehold/targets.yml:5: targets[web-01].source"), found
    assert expected in found


def test_the_source_driver_takes_every_key_of_the_model() -> None:
    from safehold.sources import REGISTRY
    from safehold.sources.ssh import SshSource

    assert REGISTRY["ssh"][:2] == ("safehold.sources.ssh", "SshSource")
    config = load("{type: ssh, host: h, user: u, paths: [/etc], before: 'sync', after: 'true'}")
    driver = SshSource(**config.targets[0].source.model_dump(exclude={"type"}))
    assert driver.paths == ["/etc"] and driver.before == "sync"
