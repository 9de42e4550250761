"""Tests import scripts/ and tests/mutants/ files by path: they are not packages."""

import importlib.util
from pathlib import Path


def load_module(path, name: str | None = None):
    """The module in the file at `path`, imported under `name` (default: the file's stem)."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
