"""The ``type: hyperv`` source in targets.yml: safe defaults and errors that name the line."""

from __future__ import annotations

import textwrap

import pytest

from safehold.config import load_config_text
from safehold.errors import ConfigError


def load(source: str):
    text = f"repository: {{url: /srv/repo}}\ntargets:\n  - {{name: vm, tier: 1, source: {source}}}\n"
    return load_config_text(textwrap.dedent(text), "/etc/safehold/targets.yml", environ={})


def test_defaults_check_certificates_and_ask_for_application_consistency() -> None:
    source = load("{type: hyperv, host: hv01, vm: sql-01, ca_bundle: ca.pem}").targets[0].source
    assert source.verify_certificate is True and source.ssl is True
    assert source.consistency == "application" and source.auth == "negotiate"
    assert source.password_env == "SAFEHOLD_HYPERV_PASSWORD"
    assert source.ca_bundle == "/etc/safehold/ca.pem"  # relative to the configuration file


@pytest.mark.parametrize(("source", "expected"), [
    ("{type: hyperv, host: hv01}", "targets[vm].source.vm"),
    ("{type: hyperv, host: hv01, vm: x, consistency: vss}", "'application' or 'crash'"),
    ("{type: hyperv, host: hv01, vm: x, password: hunter2}", "password"),
    ("{type: hyperv, host: hv01, vm: x, password_env: 'not a name'}", "not an environment variable name"),
])
def test_mistakes_are_named_with_their_line(source: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(source)
    (problem,) = caught.value.problems
    assert problem.startswith("/etc/safehold/targets.yml:3:") and expected in problem, problem
