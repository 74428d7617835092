"""Fixtures of the AWS suite: a moto server process on loopback (``moto_support``).

moto runs with safehold's extensions (``moto_extensions``) that make it follow
AWS where it does not; docs/testing.md lists every gap and how it is covered.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# --import-mode=importlib puts no test folder on sys.path; the helpers live here.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import moto_support  # noqa: E402


@pytest.fixture(scope="session")
def moto() -> moto_support.MotoServer:
    return moto_support.shared_server()


@pytest.fixture
def s3(moto):
    return moto.client("s3")


@pytest.fixture
def lock_bucket(moto) -> str:
    """A bucket created with Object Lock (and so with versioning)."""
    return moto_support.make_bucket(moto, object_lock=True)


@pytest.fixture
def plain_bucket(moto) -> str:
    return moto_support.make_bucket(moto, object_lock=False)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials for the standard chain (moto accepts any), nothing else from the host's environment."""
    import os

    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", moto_support.REGION)
