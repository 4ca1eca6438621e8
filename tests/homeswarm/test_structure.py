"""The layering of DESIGN.md, one import root of our own, and each package's public face."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROOT_PACKAGE = "homeswarm"
LAYERS = ["transports", "vault", "kernels", "placement", "learning", "swarm", "simulations", "cli"]
# what each layer may not import (DESIGN.md: arrows point down only)
FORBIDDEN = {
    "transports": {"swarm", "placement", "vault", "kernels", "learning", "simulations", "cli"},
    "placement": {"swarm", "learning", "simulations", "cli"},
    "vault": {"swarm", "simulations", "placement", "learning", "cli"},
    "kernels": {"swarm", "simulations", "placement", "vault", "learning", "cli"},
    "learning": {"swarm", "simulations", "cli"},
    "swarm": {"simulations", "cli"},
    "simulations": {"cli"},
}


def imported_names(path: Path) -> list[str]:
    """Every dotted name a module imports absolutely; ``from a.b import c`` gives a.b and a.b.c."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return names


def imported_layers(path: Path) -> set[str]:
    """The layers (``homeswarm.X``) a module imports."""
    return {
        parts[1]
        for parts in (name.split(".") for name in imported_names(path))
        if parts[0] == ROOT_PACKAGE and len(parts) > 1
    }


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_never_import_higher_ones(package):
    for path in (ROOT / package).rglob("*.py"):
        bad = imported_layers(path) & FORBIDDEN[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_the_exception_tree_is_the_floor_and_imports_nothing():
    errors = ROOT / ROOT_PACKAGE / "errors.py"
    tree = ast.parse(errors.read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"annotations"}, imported


def test_the_checker_sees_a_higher_import(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("from homeswarm.swarm._peer import Peer\nfrom homeswarm import vault\n")
    assert imported_layers(bad) == {"swarm", "vault"}


def test_every_layer_is_a_folder_under_the_one_import_root():
    for layer in LAYERS:
        link = ROOT / ROOT_PACKAGE / layer
        assert link.resolve() == (ROOT / layer).resolve(), layer
        assert (ROOT / layer / "__init__.py").is_file()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["project"]["name"] == ROOT_PACKAGE
    assert config["tool"]["setuptools"]["packages"]["find"]["include"] == [f"{ROOT_PACKAGE}*"]


def our_import_names() -> set[str]:
    """The top-level import names our installed distribution provides."""
    dist = importlib.metadata.distribution(ROOT_PACKAGE)
    names = {
        name
        for name, dists in importlib.metadata.packages_distributions().items()
        if ROOT_PACKAGE in dists
    }
    # an editable install records no files: fall back on what its finder maps
    return names or {ROOT_PACKAGE} | set((dist.read_text("top_level.txt") or "").split())


def test_no_import_name_of_ours_is_provided_by_another_installed_distribution():
    ours = our_import_names()
    assert ours == {ROOT_PACKAGE}
    clashes = {
        name: sorted(set(dists) - {ROOT_PACKAGE})
        for name, dists in importlib.metadata.packages_distributions().items()
        if name in ours and set(dists) - {ROOT_PACKAGE}
    }
    assert not clashes, f"import names shared with other distributions: {clashes}"


def test_a_dependency_named_like_one_of_our_folders_is_theirs():
    # transformers 5 imports Hugging Face's `kernels`; our kernels/ folder must not shadow it
    pytest.importorskip("transformers")
    spec = importlib.util.find_spec("kernels")
    if spec is None:
        pytest.skip("Hugging Face's kernels is not installed")
    assert spec.origin is not None
    assert Path(spec.origin).resolve().parent != (ROOT / "kernels").resolve(), spec.origin


@pytest.mark.parametrize("layer", LAYERS)
def test_each_layer_has_a_public_face(layer):
    module = importlib.import_module(f"{ROOT_PACKAGE}.{layer}")
    exported = getattr(module, "__all__", None)
    if exported is None:
        pytest.skip(f"{layer} has no __all__ yet")
    for name in exported:
        assert getattr(module, name) is not None, name


def test_one_exception_tree():
    from homeswarm import transports
    from homeswarm.swarm import errors

    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, transports.SwarmError)
    assert issubclass(transports.InvalidConfig, ValueError)
    assert issubclass(transports.RequestTimeout, TimeoutError)


def test_the_command_line_loads_no_layer_before_it_knows_the_command():
    # `swarm --help` and `swarm status` must answer at once: building the parser may not import
    # the network stack, the vault, the kernels or the simulator (bench/bench_cli.py times it)
    code = (
        "import sys; from homeswarm.cli._main import build_parser; build_parser();"
        "heavy = ('trio', 'libp2p', 'pycrdt', 'pyrage', 'cryptography', 'psutil', 'numpy',"
        " 'homeswarm.transports', 'homeswarm.vault', 'homeswarm.kernels', 'homeswarm.placement',"
        " 'homeswarm.simulations');"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_the_peer_face_loads_lazily_and_lists_what_it_serves():
    from homeswarm import swarm

    assert sorted(swarm.__all__) == sorted(swarm._FACE)
    code = (
        "import sys, homeswarm.swarm as s; before = 'trio' in sys.modules;"
        "[getattr(s, n) for n in s.__all__]; print(before, 'trio' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False", "True"]
    with pytest.raises(AttributeError):
        _ = swarm.no_such_name


def test_swarm_errors_is_the_whole_tree():
    # every exception class any layer exports, and every SwarmError any module defines, is there
    import inspect
    import pkgutil

    from homeswarm.errors import SwarmError
    from homeswarm.swarm import errors

    gathered = {getattr(errors, n) for n in errors.__all__}
    defined = set()
    for layer in LAYERS:
        package = importlib.import_module(f"{ROOT_PACKAGE}.{layer}")
        for info in pkgutil.iter_modules(package.__path__):
            if layer == "cli" or info.name in ("testing", "__main__"):
                continue
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            defined |= {
                cls
                for _, cls in inspect.getmembers(module, inspect.isclass)
                if issubclass(cls, SwarmError) and cls.__module__ == module.__name__
            }
    missing = sorted(c.__qualname__ for c in defined - gathered)
    assert not missing, f"add to homeswarm.swarm.errors: {missing}"


def private_imports(path: Path, layer: str) -> list[str]:
    """Another layer's private modules (``homeswarm.X._y``) that a module imports."""
    found = []
    for name in imported_names(path):
        parts = name.split(".")
        ours = len(parts) > 2 and parts[0] == ROOT_PACKAGE and parts[1] != layer
        private = ours and parts[2].startswith("_") and not parts[2].startswith("__")
        if private and ".".join(parts[:3]) not in found:
            found.append(".".join(parts[:3]))
    return found


@pytest.mark.parametrize("layer", LAYERS)
def test_no_layer_reaches_into_another_layers_private_modules(layer):
    for path in sorted((ROOT / layer).rglob("*.py")):
        bad = private_imports(path, layer)
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}: export them on that layer's face"


def test_the_private_import_check_can_fail(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "from homeswarm.vault._replica import Vectors\n"
        "from homeswarm.vault import X\n"
        "from homeswarm.swarm import _peer\n"
    )
    assert private_imports(module, "simulations") == [
        "homeswarm.vault._replica",
        "homeswarm.swarm._peer",
    ]
    assert private_imports(module, "vault") == ["homeswarm.swarm._peer"]


def test_reading_the_vault_with_no_peer_loads_no_network_stack(tmp_path):
    # `swarm vault get` without a running peer opens the store directly: it needs the replica
    # (pycrdt, age) but never trio, libp2p or the transports (bench/bench_cli.py times it)
    env = {**os.environ, "SWARM_HOME": str(tmp_path / "home"), "PYTHONSAFEPATH": "1"}
    subprocess.run(
        [sys.executable, "-P", "-m", "homeswarm.cli", "init", "--name", "a", "--role", "server"],
        env=env,
        capture_output=True,
        check=True,
    )
    code = (
        "import sys; from homeswarm.cli import main; rc = main(['vault', 'get', 'facts/x']);"
        "heavy = ('trio', 'libp2p', 'homeswarm.transports', 'homeswarm.vault._node', 'psutil');"
        "print(rc, 'pycrdt' in sys.modules, sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-P", "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    rc, loaded_the_replica, heavy = out.strip().split(" ", 2)
    assert rc != "0"  # no such entry: the store was opened and asked
    assert loaded_the_replica == "True"
    assert heavy == "[]"


def runtime_imports(path: Path, module: str) -> set[str]:
    """The modules ``module`` (at ``path``) imports when it runs, anywhere in it (inside
    functions too: an import put there to hide a circle still closes it), but not under
    ``if TYPE_CHECKING:``; relative imports resolved."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for statement in node.body
        for inner in ast.walk(statement)
    }
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            found |= {source, *(f"{source}.{alias.name}" for alias in node.names)}
    return found


def import_circles(modules: dict[str, Path]) -> list[list[str]]:
    """Every set of our modules that import each other round (strongly connected, > 1)."""
    graph = {
        name: sorted(
            m
            for m in runtime_imports(path, name)
            if m in modules and m != name and not name.startswith(m + ".")  # (its own package)
        )
        for name, path in modules.items()
    }
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(v: str) -> None:
        order[v] = low[v] = len(order)
        stack.append(v)
        for w in graph[v]:
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            circle = []
            while True:
                w = stack.pop()
                circle.append(w)
                if w == v:
                    break
            if len(circle) > 1:
                circles.append(sorted(circle))

    for v in sorted(graph):
        if v not in order:
            visit(v)
    return circles


def our_modules(root: Path, layers: list[str]) -> dict[str, Path]:
    modules = {}
    for layer in layers:
        for path in (root / layer).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            name = ".".join([ROOT_PACKAGE, *(parts[:-1] if parts[-1] == "__init__" else parts)])
            modules[name] = path
    return modules


def test_no_module_imports_another_that_imports_it_back():
    assert import_circles(our_modules(ROOT, LAYERS)) == []


def test_the_circle_check_sees_one_hidden_in_a_function(tmp_path):
    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "__init__.py").write_text("")
    (tmp_path / "cli" / "_a.py").write_text("from ._b import f\n")
    (tmp_path / "cli" / "_b.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ._c import x\n"
        "def f():\n    from homeswarm.cli._a import g\n"
    )
    (tmp_path / "cli" / "_c.py").write_text("from . import _b\n")
    assert import_circles(our_modules(tmp_path, ["cli"])) == [
        ["homeswarm.cli._a", "homeswarm.cli._b"]
    ]
