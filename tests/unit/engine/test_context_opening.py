"""Context.start_opening (issue 19, fourth round): backup and restore begin the key derivation in a
thread of their own while the engine's modules load; the next open takes that opening over and
never derives a second time, and a failure there (no password in the environment) falls back to
the caller's own open, which prompts or raises as before."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from safehold import errors
from safehold.config import load_config_text
from safehold.engine.context import Context
from safehold.repository import Repository, crypto
from safehold.repository.backends import open_backend

FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}


@pytest.fixture
def derivations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The thread of every key derivation made (the process-wide cache emptied first)."""
    crypto.forget_derived()
    made: list[str] = []
    original = crypto._derive_uncached

    def counted(*args, **kwargs):
        made.append(threading.current_thread().name)
        return original(*args, **kwargs)

    monkeypatch.setattr(crypto, "_derive_uncached", counted)
    yield made
    crypto.forget_derived()


def context_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, password: str | None) -> Context:
    Repository.init(open_backend(str(tmp_path / "repo")), b"pw", FAST_KDF)
    if password is None:
        monkeypatch.delenv("OPENING_PASSWORD", raising=False)
    else:
        monkeypatch.setenv("OPENING_PASSWORD", password)
    text = (f"repository:\n  url: {tmp_path / 'repo'}\n  password_env: OPENING_PASSWORD\n"
            f"state_dir: {tmp_path / 'state'}\ntargets: []\n")
    return Context(load_config_text(text, tmp_path / "targets.yml"))


def test_the_opening_begun_early_is_taken_over_with_one_derivation(tmp_path, monkeypatch, derivations) -> None:
    context = context_on(tmp_path, monkeypatch, "pw")
    crypto.forget_derived()  # init's own derivation is not the command's
    derivations.clear()
    context.start_opening()
    context.start_opening()  # one under way: nothing more
    repository = context.open_repository(load_index=False)
    assert len(derivations) == 1 and derivations[0].startswith("safehold-key")
    assert context._opening is None and context._unlocked == (repository.master, repository.key_name)
    context.open_repository(load_index=False)  # the key is kept: no derivation either
    assert len(derivations) == 1


def test_without_a_password_the_open_prompts_in_the_callers_thread(tmp_path, monkeypatch, derivations) -> None:
    context = context_on(tmp_path, monkeypatch, None)
    asked: list[str] = []
    context.ask_password = lambda new: asked.append(threading.current_thread().name) or b"pw"
    context.start_opening()  # fails in its thread: it never prompts
    context.open_repository(load_index=False)
    assert asked == [threading.current_thread().name]
    context_without = context_on(tmp_path / "other", monkeypatch, None)
    context_without.start_opening()
    with pytest.raises(errors.PasswordMissing):
        context_without.open_repository(load_index=False)


def test_a_restore_takes_the_early_opening_through_open_ahead(tmp_path, monkeypatch, derivations) -> None:
    from concurrent.futures import ThreadPoolExecutor

    context = context_on(tmp_path, monkeypatch, "pw")
    crypto.forget_derived()
    derivations.clear()
    context.start_opening()
    with ThreadPoolExecutor(1) as pool:
        future = context.open_ahead(pool)  # the one under way, not a second derivation
        assert future is not None and isinstance(future.result(), Repository)
    assert len(derivations) == 1 and context.open_ahead(pool) is None  # the key is ours now
