"""The package's shape: the pure parts import no network library; the README's map is true."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Makes dnspython, httpx (and what lies under it) unimportable in a fresh interpreter.
BLOCKER = """
import sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"dns", "httpx", "httpcore", "h11", "anyio", "certifi"}:
            raise ImportError(f"{name} is blocked for this test")
        return None
sys.meta_path.insert(0, Blocked())
"""


@pytest.mark.parametrize(
    "module", ["probe.analysis", "probe.model.records", "probe.ooni.helper_protocol"]
)
def test_pure_packages_import_without_the_network_stack(module):
    code = BLOCKER + f"import {module}\nprint('ok')\n"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_blocker_blocks():
    # Without this, the test above could pass because the blocker does nothing.
    code = BLOCKER + "import probe.net.resolvers\n"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "blocked for this test" in result.stderr


def test_readme_map_matches_the_tree():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## For developers", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`probe/([a-z_]+)/`", section))
    folders = {p.name for p in (ROOT / "probe").iterdir() if p.is_dir() and p.name[0] != "_"}
    assert listed == folders


def _layers() -> dict[str, int]:
    """The README's layer list: family -> its rank, lowest first."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("Layers, lowest first", 1)[1].split("\n\n", 2)[1]
    ranks = {}
    for line in section.splitlines():
        item = re.match(r"(\d+)\. (.*)", line)
        assert item, f"not a numbered layer: {line!r}"
        for family in re.findall(r"`([a-z_]+)`", item[2]):
            ranks[family] = int(item[1])
    return ranks


def _family(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def _imports(path: Path, module: str) -> set[str]:
    """Every ``probe`` module that ``path`` (the module ``module``) imports, anywhere in it."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)  # "from . import x"
    modules = {_module(p) for p in (ROOT / "probe").rglob("*.py")}
    return {name for name in found if name in modules}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_import_runs_down_the_readme_layers():
    ranks = _layers()
    families = {_family(_module(p)) for p in (ROOT / "probe").rglob("*.py")}
    assert families - ranks.keys() == set(), "a family of the package is in no README layer"
    upward = []
    for path in sorted((ROOT / "probe").rglob("*.py")):
        module = _module(path)
        for imported in sorted(_imports(path, module)):
            if ranks[_family(imported)] > ranks[_family(module)]:
                upward.append(f"{module} -> {imported}")
    assert upward == []


def test_the_layer_test_sees_an_upward_import(tmp_path):
    # The rule above must be able to fail: a relative import from the bottom to the top.
    ranks = _layers()
    path = ROOT / "probe" / "model" / "records.py"
    assert "probe.app.run" not in _imports(path, "probe.model.records")
    fake = tmp_path / "records.py"
    fake.write_text("from ..app import run\nfrom ..cli._group import cli\n")
    found = _imports(fake, "probe.model.records")
    assert found == {"probe.app", "probe.app.run", "probe.cli._group"}
    assert all(ranks[_family(name)] > ranks["model"] for name in found)


def test_every_module_is_named_in_its_folders_readme_row():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## For developers", 1)[1].split("\n## ", 1)[0]
    missing = []
    for row in re.findall(r"^\| `probe/([a-z_]+)/` \|(.*)\|$", section, re.M):
        folder, text = row
        named = set(re.findall(r"`([a-z_0-9]+)`", text))
        for path in sorted((ROOT / "probe" / folder).glob("*.py")):
            if path.stem != "__init__" and not path.stem.startswith("_") and path.stem not in named:
                missing.append(f"probe/{folder}/{path.name}")
    assert missing == []


def _commands(group, prefix=""):
    import click

    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command.callback.__module__.rsplit(".", 1)[-1]


def test_the_readme_lists_every_command_under_its_module():
    from probe.cli import cli

    readme = (ROOT / "README.md").read_text()
    row = re.search(r"^\| `probe/cli/` \|(.*)\|$", readme, re.M)[1]
    listed = {}
    for family, names in re.findall(r"`([a-z_]+)`: ([^;)]+)", row):
        for name in names.replace(", and ", ", ").split(","):
            listed[name.strip()] = family
    assert listed == dict(_commands(cli))
