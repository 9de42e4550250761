"""What model.py hands to modules outside it, without importing them: the speed switch and generation.

model.py is the eager math and nothing else (docs/design.md, "One-way rules"). Two public entry points on the model
still reach beyond it, and both come through here:

- `use_implementation(model, name)`, called when a GPTOssModelFull is built (config.implementation) and by
  model.set_implementation: "eager" leaves, or puts back, model.py's own classes; any other name is looked up in
  IMPLEMENTATIONS, the module whose `attach(model)` re-seats the model's modules (fast.py re-classes attention,
  experts and decoder layers) and whose `detach(model)` undoes that.
- `generate(model, ...)`, behind model.generate: generate.py's sampling loop.

Each module is imported on first use, so `import gptoss_model.model` imports neither fast.py nor generate.py
(tests/test_import_rules.py pins this).
"""

import importlib
import sys

IMPLEMENTATIONS = {"fast": "gptoss_model.fast"}  # name -> module with attach(model) / detach(model)


def use_implementation(model, implementation: str) -> None:
    for name, module_name in IMPLEMENTATIONS.items():
        # only an imported module can have attached itself, so an eager model never imports a fast path
        if name != implementation and module_name in sys.modules:
            sys.modules[module_name].detach(model)
    if implementation != "eager":
        importlib.import_module(IMPLEMENTATIONS[implementation]).attach(model)


def generate(model, input_ids, max_new_tokens: int, **options):
    return importlib.import_module("gptoss_model.generate").generate(model, input_ids, max_new_tokens, **options)
