"""The root folders are one namespace (paywatch.*); nothing installs a generic top-level module."""

import ast
import subprocess
import sys
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


# ---------------------------------------------------------------- layering
#
# Three layers, each importing only from the ones below (docs/architecture.md):
#   base   paywatch/*.py                      contract, clock, settings, wiring; imports no stage
#   stage  collectors/ detectors/ alerts/ compensation/ dashboards/ simulator/
#   app    paywatch/app/: the config, every command, the embedded backend (paywatch/app/embedded/), the demo
# A stage imports the base and itself; of another stage only the public SDK, which every
# process may use like any payment service does (to send its own heartbeats — the SDK's
# heartbeat sender —, to simulate services). Everything else of another stage is its internals.

STAGES = ("collectors", "detectors", "alerts", "compensation", "dashboards", "simulator")
APP = ("app",)
PUBLIC = frozenset({"paywatch.collectors.sdk", "paywatch.collectors.sdk_settings", "paywatch.collectors.heartbeat"})


def _modules() -> dict[str, Path]:
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {}
    for package, folder in setup["package-dir"].items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every paywatch module `name` imports, at any depth (lazy and TYPE_CHECKING ones too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return {m for m in out if m == "paywatch" or m.startswith("paywatch.")}


def _layer(module: str) -> tuple[str, str]:
    """(layer, folder) of a module: base/paywatch, stage/<stage> or app/app."""
    part = module.split(".")[1] if "." in module else ""
    if part in STAGES:
        return "stage", part
    if part in APP:
        return "app", "app"
    return "base", "paywatch"


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _base_violations(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{m} -> {i}"
        for m, imports in graph.items()
        if _layer(m)[0] == "base"
        for i in imports
        if _layer(i)[0] != "base"
    )


def _stage_violations(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for m, imports in graph.items():
        layer, folder = _layer(m)
        for i in imports if layer == "stage" else ():
            other_layer, other = _layer(i)
            if other_layer == "app" or (other_layer == "stage" and other != folder and i not in PUBLIC):
                wrong.append(f"{m} -> {i}")
    return sorted(wrong)


def _folder_cycles(graph: dict[str, set[str]]) -> list[str]:
    edges: dict[str, set[str]] = {}
    for m, imports in graph.items():
        edges.setdefault(_layer(m)[1], set()).update(_layer(i)[1] for i in imports)
    for folder in edges:
        edges[folder].discard(folder)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in edges.get(start, ()))

    return sorted(f for f in edges if reaches(f, f, {f}))


def test_the_base_imports_no_stage_and_no_app():
    wrong = _base_violations(_graph())
    assert not wrong, "the base must not depend on what is built on it:\n" + "\n".join(wrong)


def test_a_stage_imports_no_app_and_no_other_stage_internals():
    wrong = _stage_violations(_graph())
    assert not wrong, "stages talk through the base, not each other's internals:\n" + "\n".join(wrong)


def test_folders_import_each_other_in_no_cycle():
    cycles = _folder_cycles(_graph())
    assert not cycles, f"folders in an import cycle: {cycles}"


def test_the_rules_catch_what_they_forbid():
    """Each rule flags a graph that breaks it (the old circle: config importing every stage)."""
    assert _base_violations({"paywatch.config": {"paywatch.detectors.settings"}}) == [
        "paywatch.config -> paywatch.detectors.settings"
    ]
    assert _stage_violations({"paywatch.compensation.executor": {"paywatch.alerts.delivery"}})
    assert _stage_violations({"paywatch.detectors.runtime": {"paywatch.app.config"}})
    assert not _stage_violations({"paywatch.alerts.runtime": {"paywatch.collectors.sdk", "paywatch.stage"}})
    circle = {
        "paywatch.simulator.telemetry": {"paywatch.collectors.sdk"},
        "paywatch.collectors.x": {"paywatch.simulator"},
    }
    assert _folder_cycles(circle) == ["collectors", "simulator"]
    assert not _folder_cycles({"paywatch.app.cli": {"paywatch.detectors.engine"}, "paywatch.detectors.engine": set()})


def test_the_graph_is_built_from_the_real_imports():
    graph = _graph()
    assert "paywatch.compensation.engine" in graph["paywatch.compensation.executor"]
    assert "paywatch.collectors.sdk" in graph["paywatch.alerts.runtime"]
    assert any(_layer(i)[0] == "stage" for i in graph["paywatch.app.config"])
    assert _layer("paywatch.app.embedded.pipeline") == ("app", "app")


def test_importing_the_sdk_loads_no_other_stage():
    """Payment services embed the SDK: it must not drag in detectors, compensation, dashboards…"""
    code = "import sys, paywatch.collectors.sdk; print('\\n'.join(m for m in sys.modules if m.startswith('paywatch')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "paywatch.collectors.sdk" in loaded
    others = [m for m in loaded if _layer(m)[0] != "base" and not m.startswith("paywatch.collectors")]
    assert not others, f"the SDK loads {others}"
    collectors = {m for m in loaded if m.startswith("paywatch.collectors.")}
    assert collectors <= {"paywatch.collectors.sdk", "paywatch.collectors.sdk_settings"} | {
        "paywatch.collectors.heartbeat",
        "paywatch.collectors.spool",
        "paywatch.collectors.transports",
    }, collectors
