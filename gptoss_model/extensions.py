"""What model.py hands to modules outside it, without importing them: the speed switch and generation.

model.py is the eager math and nothing else (docs/design.md, "One-way rules"). Two public entry points on the model
still reach beyond it, and both come through here:

- `use_implementation(model, name)`, called when a GPTOssModelFull is built (config.implementation) and by
  model.set_implementation: "eager" leaves, or puts back, model.py's own classes; "fast" calls fast.attach(model),
  which re-classes the model's attention, experts and decoder layers (fast.detach undoes it).
- `generate(model, ...)`, behind model.generate: generate.py's decoding loop.

Each module is imported when first used, so `import gptoss_model.model` imports neither fast.py nor generate.py
(tests/test_import_rules.py pins this).
"""

import sys

FAST_MODULE = "gptoss_model.fast"


def use_implementation(model, implementation: str) -> None:
    if implementation == "fast":
        from gptoss_model import fast

        fast.attach(model)
    elif FAST_MODULE in sys.modules:  # only an imported fast.py can have attached itself: eager never imports it
        sys.modules[FAST_MODULE].detach(model)


def generate(model, input_ids, max_new_tokens: int, **options):
    from gptoss_model.generate import generate as decode

    return decode(model, input_ids, max_new_tokens, **options)
