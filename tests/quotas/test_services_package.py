"""The services packages share steps by public names: no module imports another module's
private helper from them, and no package re-exports a private name."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["quotas.services", "quotas.services.ledger"]


def _private_imports(path: Path) -> list[str]:
    """`module.name` for every `from quotas.services... import _name` in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("quotas.services"):
            found += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    return found


def test_no_module_imports_a_private_name_from_the_quotas_services():
    sources = [
        p
        for app in ("portal", "accounts", "quotas", "jobs", "bench", "tests")
        for p in (ROOT / app).rglob("*.py")
        if "migrations" not in p.parts
    ]

    offenders = {str(p.relative_to(ROOT)): names for p in sources if (names := _private_imports(p))}

    assert offenders == {}


@pytest.mark.parametrize("package", PACKAGES)
def test_a_services_package_exports_public_names_only(package):
    module = importlib.import_module(package)

    assert [name for name in module.__all__ if name.startswith("_")] == []
    assert all(hasattr(module, name) for name in module.__all__)
