"""The YAML loader is bounded: a hostile or broken targets.yml fails fast, with file:line and the limit.

A "billion laughs" file is a few hundred bytes of nested aliases that expand to
billions of nodes; it must be refused before anything walks the expansion.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from safehold.config import load_config, load_config_text
from safehold.config import loader
from safehold.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]

BILLION_LAUGHS = textwrap.dedent(
    """\
    repository: {url: "file:///tmp/r"}
    a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
    f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
    h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
    targets: [*h, *h, *h, *h, *h, *h, *h, *h, *h]
    """
)


def only_problem(text: str, path: str = "targets.yml") -> str:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, path, environ={})
    assert caught.value.exit_code == 30
    assert len(caught.value.problems) == 1, caught.value.problems
    return caught.value.problems[0]


def test_billion_laughs_is_refused_with_line_and_limit() -> None:
    problem = only_problem(BILLION_LAUGHS)
    assert problem.startswith("targets.yml:")
    assert "aliases expand to more than" in problem and "nodes" in problem


def test_billion_laughs_fails_fast_with_bounded_memory(tmp_path: Path) -> None:
    """In a fresh interpreter, so the peak RSS is this load's, not the test run's."""
    config = tmp_path / "targets.yml"
    config.write_text(BILLION_LAUGHS)
    script = textwrap.dedent(
        f"""\
        import json, re
        from safehold.config import load_config
        from safehold.errors import ConfigError

        def peak_kib():
            # VmHWM belongs to this process image; getrusage's ru_maxrss survives exec and
            # would report the forking pytest process.
            with open("/proc/self/status") as status:
                return int(re.search(r"VmHWM:\\s*(\\d+) kB", status.read()).group(1))

        before = peak_kib()
        try:
            load_config({str(config)!r})
            outcome = "loaded"
        except ConfigError as error:
            outcome = error.problems[0]
        peak = peak_kib()
        print(json.dumps({{"outcome": outcome, "before_kib": before, "peak_kib": peak}}))
        """
    )
    # An address-space cap turns a regression into a MemoryError instead of an OOM-killed test host.
    limited = "import resource; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); " + f"exec({script!r})"
    result = subprocess.run([sys.executable, "-c", limited], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert "aliases expand to more than" in report["outcome"]
    assert report["peak_kib"] - report["before_kib"] < 50 * 1024, report
    assert report["peak_kib"] < 200 * 1024, report


def test_recursive_alias_is_refused() -> None:
    problem = only_problem('repository: {url: "file:///tmp/r"}\ntargets: &loop [*loop]\n')
    assert problem.startswith("targets.yml:2:") and "refers to itself" in problem


def test_too_many_aliases() -> None:
    lines = ['repository: {url: "file:///tmp/r"}', "x: &x 1", "many:"]
    lines += ["  - *x"] * (loader.MAX_ALIASES + 1)
    problem = only_problem("\n".join(lines) + "\n")
    assert f"more than {loader.MAX_ALIASES} aliases" in problem
    assert problem.startswith(f"targets.yml:{3 + loader.MAX_ALIASES + 1}:")


def test_deep_nesting_is_refused() -> None:
    depth = loader.MAX_DEPTH + 5
    text = 'repository: {url: "file:///tmp/r"}\ntargets: ' + "[" * depth + "]" * depth + "\n"
    problem = only_problem(text)
    assert problem.startswith("targets.yml:2:")
    assert f"nested deeper than {loader.MAX_DEPTH} levels" in problem


def test_very_deep_nesting_does_not_overflow_the_stack() -> None:
    depth = 100_000
    problem = only_problem("targets: " + "[" * depth + "]" * depth + "\n")
    assert "nested deeper than" in problem


def test_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    config = tmp_path / "targets.yml"
    with config.open("w") as handle:
        handle.write('repository: {url: "file:///tmp/r"}\ntargets: []\n')
        handle.write("# padding\n" * (loader.MAX_FILE_BYTES // 10 + 1))
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert caught.value.exit_code == 30
    (problem,) = caught.value.problems
    assert problem.startswith(f"{config}:1:") and f"larger than {loader.MAX_FILE_BYTES} bytes" in problem


def test_normal_anchors_and_merge_keys_still_work() -> None:
    text = textwrap.dedent(
        """\
        repository: {url: "file:///tmp/r"}
        defaults: &defaults
          tier: 2
          retention: {keep_last: 3}
        targets:
          - <<: *defaults
            name: a
            source: {type: files, paths: [/etc]}
          - <<: *defaults
            name: b
            source: {type: files, paths: [/srv]}
        """
    )
    with pytest.raises(ConfigError) as caught:  # 'defaults' is not a key; the anchors are fine
        load_config_text(text, "targets.yml", environ={})
    assert all("defaults" in p for p in caught.value.problems), caught.value.problems


@pytest.mark.parametrize(
    "path",
    [ROOT / "configs" / "targets.yml", ROOT / "monitoring" / "safehold" / "targets.yml"],
    ids=lambda path: path.parent.name,
)
def test_shipped_configs_still_load(path: Path) -> None:
    load_config(path, environ={"SAFEHOLD_PASSWORD": "x"})
