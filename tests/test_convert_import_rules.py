"""The one-way import rules of gptoss_convert (docs/design.md, "Import rules"), pinned two ways: in a fresh
interpreter (sys.modules after one import) and in the source (every import statement, those inside functions too)."""

import ast
from pathlib import Path

from tests.test_import_rules import REPO_ROOT, modules_after

PACKAGE = REPO_ROOT / "gptoss_convert"


def imports_of(path: Path) -> set[str]:
    """Every module an import statement of `path` names (`from a import b` gives a and a.b)."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            imported |= {node.module or ""} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
    return imported


def ours(loaded: set[str]) -> set[str]:
    return {name for name in loaded if name.split(".")[0] in ("gptoss_convert", "gptoss_model")}


STEPS = ("gptoss_convert.verify", "gptoss_convert.load", "gptoss_convert.sources", "gptoss_convert.report",
         "gptoss_convert.gate", "gptoss_convert.checkpoint", "gptoss_convert.offload")


def test_no_step_imports_convert_or_the_download_machinery():
    loaded = modules_after("\n".join(f"import {module}" for module in STEPS))  # none of them, so neither does each
    assert set(STEPS) <= loaded
    for other in ("gptoss_convert.convert", "gptoss_convert.hub", "gptoss_convert.cli", "huggingface_hub"):
        assert other not in loaded, f"importing the steps imported {other}"


def test_mxfp4_imports_only_errors_from_us():
    assert ours(modules_after("import gptoss_convert.mxfp4")) == {
        "gptoss_convert", "gptoss_convert.errors", "gptoss_convert.mxfp4"}
    assert {m for m in imports_of(PACKAGE / "mxfp4.py") if m.startswith("gptoss")} == {
        "gptoss_convert.errors", "gptoss_convert.errors.InputError", "gptoss_convert.errors.IntegrityError"}


def test_only_the_cli_imports_convert_and_hub_and_nothing_imports_the_cli():
    for path in sorted(PACKAGE.rglob("*.py")):
        imported = imports_of(path)
        name = path.relative_to(REPO_ROOT).as_posix()
        assert not {"gptoss_convert.cli", "gptoss_convert.cli.cli"} & imported, f"{name} imports the cli"
        if name != "gptoss_convert/cli.py":
            for step in ("gptoss_convert.convert", "gptoss_convert.hub"):
                assert not any(m == step or m.startswith(step + ".") for m in imported), f"{name} imports {step}"


def test_gptoss_model_never_imports_gptoss_convert():
    for path in sorted((REPO_ROOT / "gptoss_model").rglob("*.py")):
        assert not any(m.startswith("gptoss_convert") for m in imports_of(path)), path.name
