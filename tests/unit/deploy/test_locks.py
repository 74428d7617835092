"""The lock files pin everything the quickstart and the tests install (issue: a new upstream release
must not change what CI runs), and the Debian version check catches another upstream version."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
REQUIREMENTS = ROOT / "requirements"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(\S+)")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock(name: str) -> dict[str, tuple[str, int]]:
    """package -> (version, number of hashes) of one lock file; every entry must be pinned."""
    entries: dict[str, tuple[str, int]] = {}
    current = None
    for line in (REQUIREMENTS / name).read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = PIN.match(stripped)
        if match:
            current = _canonical(match.group(1))
            entries[current] = (match.group(3), 0)
        elif stripped.startswith("--hash=sha256:"):
            assert current is not None, f"{name}: a hash before any requirement"
            version, hashes = entries[current]
            entries[current] = (version, hashes + 1)
        else:
            raise AssertionError(f"{name}: not an exact pin or a hash: {line!r}")
    return entries


def _requirement_names(requirements: list[str]) -> set[str]:
    return {_canonical(re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0]) for r in requirements}


def test_every_dependency_is_pinned_with_hashes():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base, test = _lock("base.lock"), _lock("test.lock")
    build = _requirement_names(["setuptools", "wheel"])
    assert _requirement_names(project["dependencies"]) | build <= set(base)
    assert _requirement_names(project["dependencies"] + project["optional-dependencies"]["test"]) | build <= set(test)
    for name, entries in (("base.lock", base), ("test.lock", test)):
        unhashed = [package for package, (_version, hashes) in entries.items() if hashes == 0]
        assert not unhashed, f"requirements/{name}: no hash for {unhashed}"


def test_the_quickstart_lock_agrees_with_the_test_lock():
    # base.lock is compiled with test.lock as constraints: one version of each package everywhere.
    base, test = _lock("base.lock"), _lock("test.lock")
    differing = {name: (version, test[name][0]) for name, (version, _) in base.items()
                 if name in test and test[name][0] != version}
    assert not differing, f"base.lock and test.lock pin different versions: {differing}"
    assert set(base) <= set(test)


def test_bootstrap_installs_from_the_locks_with_hashes():
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    assert "--require-hashes" in bootstrap
    assert "requirements/base.lock" in bootstrap and "requirements/test.lock" in bootstrap
    # safehold itself without its dependencies and without fetching unpinned build tools
    assert "--no-deps --no-build-isolation" in bootstrap


def test_debian_version_check_names_a_wrong_upstream_version(tmp_path):
    script = ROOT / "scripts" / "check_debian_versions.sh"
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "dpkg"], capture_output=True, text=True,
                             check=True).stdout
    upstream = version.split(":", 1)[-1].rsplit("-", 1)[0]
    good = tmp_path / "good.txt"
    good.write_text(f"# comment\ndpkg {upstream}  # the package manager itself\n")
    assert subprocess.run(["bash", str(script), str(good)], capture_output=True).returncode == 0
    bad = tmp_path / "bad.txt"
    bad.write_text("dpkg 0.0.1\nsafehold-no-such-package 1.0\n")
    result = subprocess.run(["bash", str(script), str(bad)], capture_output=True, text=True)
    assert result.returncode == 1
    assert f"dpkg is {version}, expected upstream 0.0.1*" in result.stderr
    assert "safehold-no-such-package is not installed" in result.stderr


def test_pylock_toml_pins_the_same_versions_as_the_test_lock():
    """pylock.toml (PEP 751, made by scripts/lock.sh) holds exactly the versions requirements/test.lock pins."""
    import re
    import tomllib

    root = Path(__file__).resolve().parents[3]
    pylock = tomllib.loads((root / "pylock.toml").read_text())
    in_pylock = {package["name"].lower(): package["version"] for package in pylock["packages"]}
    pinned = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^ \\]+)", (root / "requirements" / "test.lock").read_text(), re.M))
    assert in_pylock == {name.lower().replace("_", "-"): version for name, version in pinned.items()}
