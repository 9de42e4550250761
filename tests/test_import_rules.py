"""The one-way import rules of docs/design.md, pinned in a fresh interpreter (sys.modules after one import)."""

import ast
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def modules_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                            env={"PYTHONPATH": str(REPO_ROOT), "PATH": ""}, timeout=120, check=True)
    return set(result.stdout.split())


def test_the_eager_model_imports_no_fast_path_decoder_or_offloader():
    loaded = modules_after("import gptoss_model.model")
    assert "gptoss_model.model" in loaded
    for module in ("gptoss_model.fast", "gptoss_model.generate", "gptoss_model.decode", "gptoss_model.offload"):
        assert module not in loaded, f"importing gptoss_model.model imported {module}"
    assert not any(name == "gptoss_convert" or name.startswith("gptoss_convert.") for name in loaded)
    assert "transformers" not in loaded


def test_the_fast_path_loads_only_when_a_model_asks_for_it():
    eager = modules_after("from gptoss_model import GPTOss_Small, GPTOssModelFull\n"
                          "GPTOssModelFull(GPTOss_Small(num_hidden_layers=1)).set_implementation('eager')")
    assert "gptoss_model.fast" not in eager
    fast = modules_after("from gptoss_model import GPTOss_Small, GPTOssModelFull\n"
                         "GPTOssModelFull(GPTOss_Small(num_hidden_layers=1, implementation='fast'))")
    assert "gptoss_model.fast" in fast


def test_model_py_has_no_import_of_them_even_inside_a_function():
    tree = ast.parse((REPO_ROOT / "gptoss_model" / "model.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported |= {node.module or ""} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
    for module in ("gptoss_model.fast", "gptoss_model.generate", "gptoss_model.decode", "gptoss_model.offload"):
        assert module not in imported, f"model.py imports {module}"
