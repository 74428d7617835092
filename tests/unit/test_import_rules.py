"""The layers' import contracts (docs/architecture.md), checked over the source tree with ``ast``.

Every import counts: at module level, inside functions and under ``TYPE_CHECKING``, absolute or
relative. ``from package import name`` counts as importing ``package`` and ``package.name``, so
``from ..catalog import models`` is caught like ``from ..catalog.models import Job``. A failure
names the file, the line, the imported module and the rule it breaks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import safehold

PACKAGE = "safehold"
EVERYTHING_ABOVE = ("repository", "catalog", "engine", "server", "cli")

# importer package -> modules it must never import (each with everything below it)
RULES: dict[str, tuple[str, ...]] = {
    "sources": ("restore", *EVERYTHING_ABOVE),
    "restore": ("sources", *EVERYTHING_ABOVE),
    "platforms": ("sources", "restore", *EVERYTHING_ABOVE),
    "server": ("repository.backends", "catalog.models"),
    # cli.main imports the command modules to register them; they take the app from cli.app.
    "cli": ("repository.backends", "catalog.models", "cli.main"),
    "repository": ("sources", "restore", "platforms", "catalog", "engine", "server", "cli"),
}


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The absolute module names one import statement brings in."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [target] + [f"{target}.{alias.name}" for alias in node.names if alias.name != "*"]


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def violations(root: Path, rules: dict[str, tuple[str, ...]] = RULES) -> list[str]:
    """'path:line: module imports target (importer must not import forbidden)' for every breach
    under ``root`` (the ``safehold`` package folder, or a fake one in tests)."""
    found: list[str] = []
    package = root.name
    for path in sorted(root.rglob("*.py")):
        module = module_name(root, path)
        layer = module.split(".")[1] if module.count(".") else ""
        forbidden = rules.get(layer, ())
        if not forbidden:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            seen: set[str] = set()
            for target in imported_modules(node, module, path.name == "__init__.py"):
                for rule in forbidden:
                    banned = f"{package}.{rule}"
                    if within(target, banned) and banned not in seen:
                        seen.add(banned)
                        found.append(f"{path.relative_to(root.parent)}:{node.lineno}: {module} imports {target} "
                                     f"({package}.{layer} must not import {banned})")
    return found


def test_the_package_keeps_its_import_rules() -> None:
    root = Path(safehold.__file__).resolve().parent
    assert violations(root) == []


# --- the checker itself, on a tiny fake tree ------------------------------------------------------


def write(root: Path, files: dict[str, str]) -> Path:
    package = root / PACKAGE
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


CLEAN = {
    "__init__.py": "",
    "errors.py": "",
    "sources/__init__.py": "from ..errors import SourceError\n",
    "sources/ebs.py": "from ..platforms import aws\nfrom .base import View\n",
    "restore/__init__.py": "",
    "restore/ebs.py": "from ..platforms.aws.ebs_direct import write_snapshot\n",
    "platforms/__init__.py": "",
    "platforms/aws/__init__.py": "from ...errors import UsageError\n",
    "server/metrics.py": "from ..catalog import Catalog\nfrom ..engine import status\n",
    "repository/__init__.py": "from .backends import open_backend\n",
}


def test_a_clean_fake_tree_passes(tmp_path: Path) -> None:
    assert violations(write(tmp_path, CLEAN)) == []


@pytest.mark.parametrize("name, text, expected", [
    ("restore/vmware.py", "from ..sources.vmware.session import Session\n",
     "safehold/restore/vmware.py:1: safehold.restore.vmware imports safehold.sources.vmware.session "
     "(safehold.restore must not import safehold.sources)"),
    ("sources/ebs.py", "def retention():\n    from ..repository.retention import apply_policy\n",
     "safehold/sources/ebs.py:2: safehold.sources.ebs imports safehold.repository.retention "
     "(safehold.sources must not import safehold.repository)"),
    ("sources/__init__.py", "import safehold.restore\n",
     "safehold/sources/__init__.py:1: safehold.sources imports safehold.restore "
     "(safehold.sources must not import safehold.restore)"),
    ("platforms/aws/__init__.py", "from ... import catalog\n",
     "safehold/platforms/aws/__init__.py:1: safehold.platforms.aws imports safehold.catalog "
     "(safehold.platforms must not import safehold.catalog)"),
    ("server/metrics.py", "from ..catalog import models\n",
     "safehold/server/metrics.py:1: safehold.server.metrics imports safehold.catalog.models "
     "(safehold.server must not import safehold.catalog.models)"),
    ("cli/main.py", "from ..repository.backends.s3 import S3Backend\n",
     "safehold/cli/main.py:1: safehold.cli.main imports safehold.repository.backends.s3 "
     "(safehold.cli must not import safehold.repository.backends)"),
    ("cli/ebs.py", "def restore():\n    from .main import context\n",
     "safehold/cli/ebs.py:2: safehold.cli.ebs imports safehold.cli.main "
     "(safehold.cli must not import safehold.cli.main)"),
    ("repository/archiver.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..engine import Context\n",
     "safehold/repository/archiver.py:3: safehold.repository.archiver imports safehold.engine "
     "(safehold.repository must not import safehold.engine)"),
])
def test_a_planted_violation_is_named(tmp_path: Path, name: str, text: str, expected: str) -> None:
    assert violations(write(tmp_path, CLEAN | {name: text})) == [expected]
