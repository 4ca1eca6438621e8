"""The layering of DESIGN.md, and each package's public face."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "transports": {"swarm", "placement", "vault", "kernels", "simulations"},
    "placement": {"swarm"},
    "vault": {"swarm"},
    "kernels": {"swarm"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_never_import_higher_ones(package):
    for path in (ROOT / package).rglob("*.py"):
        bad = imported_packages(path) & FORBIDDEN[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_transports_exports():
    import transports

    for name in transports.__all__:
        assert getattr(transports, name) is not None
    public = {n for n in dir(transports) if not n.startswith("_")}
    modules = {"testing", "libp2p"}
    assert public - modules - set(transports.__all__) <= {
        n for n in public if type(getattr(transports, n)).__name__ == "module"
    }


def test_one_exception_tree():
    import swarm.errors
    import transports

    for name in swarm.errors.__all__:
        cls = getattr(swarm.errors, name)
        assert issubclass(cls, transports.SwarmError)
    assert issubclass(transports.InvalidConfig, ValueError)
    assert issubclass(transports.RequestTimeout, TimeoutError)
