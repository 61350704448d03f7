"""The edges import the engine only: every module under moestream/cli and moestream/server may import moestream's
`engine` package (not its submodules: what the edges use is what engine/__init__.py exports), `errors`, `assets`,
the package's own `__version__` and its own package (cli may also import server: `moestream serve` starts it),
nothing else of ours. Checked by parsing the source with `ast`, so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import moestream

ROOT = Path(moestream.__file__).parent
ALLOWED = {"cli": {"engine", "errors", "assets", "cli", "server"}, "server": {"engine", "errors", "assets", "server"}}


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every moestream module `path` imports, relative imports resolved; a name imported
    from a package counts as its submodule when it is one."""
    package = ["moestream", *path.relative_to(ROOT).parent.parts]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] + [node.module or ""]).strip(".") \
                if node.level else node.module
            out += [(node.lineno, _submodule(base, alias.name)) for alias in node.names]
    return [(line, name) for line, name in out if name == "moestream" or name.startswith("moestream.")]


def _submodule(base: str, name: str) -> str:
    parts = base.split(".")[1:] + [name]
    where = ROOT.joinpath(*parts)
    return f"{base}.{name}" if where.with_suffix(".py").exists() or where.is_dir() else base


def offences(edge: str) -> list[str]:
    bad = []
    for path in sorted((ROOT / edge).rglob("*.py")):
        for line, name in imported(path):
            parts = name.split(".")
            if name != "moestream" and (parts[1] not in ALLOWED[edge] or (parts[1] == "engine" and len(parts) > 2)):
                bad.append(f"{path.relative_to(ROOT.parent)}:{line} imports {name}")
    return bad


@pytest.mark.parametrize("edge", sorted(ALLOWED))
def test_edges_import_only_the_engine_package(edge):
    bad = offences(edge)
    assert not bad, ("cli/ and server/ reach moestream only through `moestream.engine` (re-export what they need "
                     "in moestream/engine/__init__.py), `moestream.errors` and `moestream.assets`:\n" + "\n".join(bad))


def test_the_checker_sees_relative_absolute_and_lazy_imports(tmp_path, monkeypatch):
    fake = tmp_path / "moestream"
    (fake / "cli").mkdir(parents=True)
    (fake / "engine").mkdir()
    (fake / "engine" / "loader.py").write_text("")
    (fake / "cache").mkdir()
    (fake / "cli" / "x.py").write_text("from ..engine import Engine\nfrom ..engine.loader import load_model\n"
                                       "from ..engine import loader\nimport moestream.cache\n"
                                       "def f():\n    from ..cache import config\nfrom .. import __version__\n")
    monkeypatch.setattr(f"{__name__}.ROOT", fake)
    assert [b.split(" imports ")[1] for b in offences("cli")] == [
        "moestream.engine.loader", "moestream.engine.loader", "moestream.cache", "moestream.cache"]
