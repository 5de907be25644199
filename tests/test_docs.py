"""Docs that cannot drift: the generated README/docs blocks are current, every command is listed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from docs.gen import commands, help_text, layout_entries
from pipeline.cli import app

REPO = Path(__file__).resolve().parents[1]
GENERATED = ["README.md", "docs/cli.md", "docs/decisions.md"]
COMMANDS = [path for path, _ in commands()]


def test_generated_blocks_are_current():
    """`make docs` output is committed: a changed command, option or setting fails here."""
    cog = Path(sys.executable).with_name("cog")
    done = subprocess.run([str(cog), "--check", *GENERATED], cwd=REPO, capture_output=True,
                          text=True)
    assert done.returncode == 0, f"stale generated docs (run `make docs`):\n{done.stdout}" \
                                 f"{done.stderr}"


def test_the_command_list_is_the_real_one():
    names = {path.split()[1] for path in COMMANDS}
    registered = {c.name or c.callback.__name__ for c in app.registered_commands}
    registered |= {g.name for g in app.registered_groups}
    assert names == registered and {"run", "demo", "search", "match", "cluster"} <= names


@pytest.mark.parametrize("path", COMMANDS)
def test_every_command_has_help_and_a_readme_row(path):
    args = path.split()[1:]
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "--config" in result.output
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"| `{path}" in readme
    assert f"## `{path}`" in (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert help_text(path).startswith("Usage: newswatch")


def test_the_layout_names_every_module_with_a_line():
    entries = dict(layout_entries())
    modules = [p for p in (REPO / "pipeline").rglob("*.py") if "versions" not in p.parts]
    for module in modules:
        rel = module.relative_to(REPO)
        key = f"{rel.parent}/" if module.name == "__init__.py" else str(rel)
        assert entries.get(key), f"{key} has no docstring line for the README layout"


def test_every_setting_has_a_description():
    """The settings table is generated from the model: a blank meaning is a missing doc."""
    from docs.gen import settings_rows

    undocumented = [key for key, _default, meaning in settings_rows() if not meaning]
    assert not undocumented, f"settings without a description: {undocumented}"


def test_no_benchmark_script_shadows_a_project_package():
    """`python benchmarks/x.py` puts benchmarks/ first on sys.path: a benchmarks/pipeline.py
    would be imported instead of the library by every other benchmark script."""
    packages = {p.name for p in REPO.iterdir() if (p / "__init__.py").is_file()} | {"docs"}
    scripts = {p.stem for p in (REPO / "benchmarks").glob("*.py")}
    assert "pipeline" in packages and not scripts & packages
