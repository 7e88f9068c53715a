"""The root folders are one namespace (paywatch.*); nothing installs a generic top-level module."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_declared_under_the_paywatch_namespace():
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(setup["packages"])
    mapping = setup["package-dir"]
    found = set()
    for name, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *rel)))
    assert found == declared
    assert all(p == "paywatch" or p.startswith("paywatch.") for p in declared)


def test_components_import_through_the_namespace():
    import paywatch.alerts
    import paywatch.collectors
    import paywatch.detectors

    assert paywatch.collectors.__file__.startswith(str(ROOT / "collectors"))
    assert paywatch.detectors.__name__ == "paywatch.detectors"
    assert paywatch.alerts.__name__ == "paywatch.alerts"
