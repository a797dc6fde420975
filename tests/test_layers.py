"""The architecture as the file list shows it: app.py alone knows the feature modules.

STYLE.md: the ground floor imports no feature module; feature modules reach
each other's services through the Context, and nothing imports ``app``.
"""

from __future__ import annotations

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "wsruntime_ext"
GROUND_FLOOR = {
    "base",
    "config",
    "context",
    "globs",
    "hub",
    "openapi",
    "paths",
    "procs",
    "security",
    "stats",
    "temps",
    "versions",
    "websocket",
}
FEATURES = {
    "agents",
    "docs",
    "events",
    "files",
    "git",
    "health",
    "openspec",
    "processes",
    "scripts",
    "settings",
    "ui",
    "watch",
}


def _imports(path: pathlib.Path) -> list[tuple[str, bool]]:
    """(module, at run time?) for every ``wsruntime_ext`` import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(n) for child in node.body for n in ast.walk(child))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("wsruntime_ext"):
            names = [node.module] if node.module != "wsruntime_ext" else [f"wsruntime_ext.{a.name}" for a in node.names]
            found += [(name, id(node) not in type_only) for name in names]
        elif isinstance(node, ast.Import):
            found += [(a.name, id(node) not in type_only) for a in node.names if a.name.startswith("wsruntime_ext")]
    return found


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_nothing_imports_app() -> None:
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "app.py" or path.parent != PACKAGE
        for module, _ in _imports(path)
        if module == "wsruntime_ext.app"
    ]
    assert offenders == []


def test_the_ground_floor_imports_no_feature_module_at_run_time() -> None:
    offenders = []
    for name in GROUND_FLOOR:
        for module, runtime in _imports(PACKAGE / f"{name}.py"):
            if runtime and _top(module) in FEATURES:
                offenders.append(f"{name}.py imports {module}")
    assert offenders == []


def test_feature_packages_do_not_import_each_others_services() -> None:
    """Another module's service comes through the Context; its data types (adapter options) may be imported."""
    offenders = []
    for feature in FEATURES:
        root = PACKAGE / feature
        files = list(root.rglob("*.py")) if root.is_dir() else [PACKAGE / f"{feature}.py"]
        for path in files:
            for module, runtime in _imports(path):
                other = _top(module)
                if runtime and other in FEATURES and other != feature and module.endswith((".service", ".handlers")):
                    offenders.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert offenders == []
