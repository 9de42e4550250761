"""Candidates and references: SPEC -> an object following the adapter protocol (protocol.py, docs/candidates.md).

SPEC is a built-in name (BUILTINS), `path/to/file.py:OBJECT` or `package.module:OBJECT`, where OBJECT is a
candidate instance, a class (called with no arguments) or a factory function (called with no arguments).
Built-ins are imported lazily, so a missing optional package (gpt-oss, flex attention) fails only when asked for.
"""

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path

from gptoss_convert.candidates.protocol import BUILD, Described, check_candidate, describe, guarded, provides
from gptoss_convert.errors import CandidateError, InputError

# name -> "module:factory"; the factory (a function or class) takes no arguments and returns a candidate object.
BUILTINS = {
    "gptoss_model": "gptoss_convert.candidates.builtin_gptoss:readable",
    "gptoss_model:fast": "gptoss_convert.candidates.builtin_gptoss:fast",
    "gptoss_model:mxfp4": "gptoss_convert.candidates.builtin_gptoss:packed",
    "transformers:sdpa": "gptoss_convert.candidates.builtin_transformers:sdpa",
    "transformers:flex_attention": "gptoss_convert.candidates.builtin_transformers:flex_attention",
    "openai": "gptoss_convert.candidates.openai_torch:OpenAITorch",
}
REFERENCES = {
    "transformers": "gptoss_convert.candidates.builtin_transformers:eager",
    "openai": "gptoss_convert.candidates.openai_torch:OpenAITorch",
}
DEFAULT_CANDIDATE, DEFAULT_REFERENCE = "gptoss_model", "transformers"


def register(name: str, target: str, reference: bool = False) -> None:
    """Add a built-in name ("module:factory"); used by adapters shipped outside this package."""
    (REFERENCES if reference else BUILTINS)[name] = target


def load_candidate(spec: str):
    """SPEC -> (candidate object, Described). Exit 2 (CandidateError) when it cannot be imported or made."""
    who = f"candidate {spec}"
    obj, source = _from_target(who, BUILTINS[spec]) if spec in BUILTINS else _from_user_spec(spec)
    check_candidate(obj, spec)
    return obj, describe(obj, spec, source)


def load_reference(name: str):
    """A reference name (REFERENCES) -> (object, Described). A reference must provide every component."""
    if name not in REFERENCES:
        raise InputError(f"--reference {name}: expected one of {', '.join(sorted(REFERENCES))}")
    obj, source = _from_target(f"reference {name}", REFERENCES[name])
    missing = [m for m in ("build_layer", "embed", "final_norm", "head") if not provides(obj, m)]
    if missing:
        raise CandidateError(f"reference {name}: does not provide {', '.join(missing)}")
    return obj, describe(obj, name, source)


def _from_target(who: str, target: str):
    module_name, attr = target.split(":")
    with guarded(who, f"importing {module_name}", BUILD):
        module = importlib.import_module(module_name)
    with guarded(who, f"{attr}()", BUILD):
        return getattr(module, attr)(), module.__file__


def _from_user_spec(spec: str):
    where, sep, attr = spec.rpartition(":")
    if not sep or not where or not attr:
        raise InputError(f"--candidate {spec}: expected a built-in ({', '.join(BUILTINS)}), "
                         "path/to/file.py:OBJECT or package.module:OBJECT")
    module = _import_file(spec, Path(where)) if where.endswith(".py") else _import_module(spec, where)
    if not hasattr(module, attr):
        public = [n for n in vars(module) if not n.startswith("_")]
        raise CandidateError(f"candidate {spec}: {where} has no {attr!r} (it defines {', '.join(public[:8]) or 'nothing'})")
    return _instantiate(spec, getattr(module, attr)), module.__gptoss_source__


def _import_file(spec: str, path: Path):
    if not path.is_file():
        raise CandidateError(f"candidate {spec}: no such file {path}")
    module_spec = importlib.util.spec_from_file_location(f"gptoss_candidate_{abs(hash(str(path.resolve())))}", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module  # dataclasses and pickling look a class's module up there
    with guarded(f"candidate {spec}", f"importing {path}", BUILD):
        module_spec.loader.exec_module(module)
    module.__gptoss_source__ = str(path)
    return module


def _import_module(spec: str, name: str):
    with guarded(f"candidate {spec}", f"importing {name}", BUILD):
        module = importlib.import_module(name)
    module.__gptoss_source__ = getattr(module, "__file__", name)
    return module


def _instantiate(spec: str, obj):
    """A class is instantiated, a factory called; an object already following the protocol is used as is."""
    if inspect.isclass(obj) or (callable(obj) and not (provides(obj, "build_layer") or provides(obj, "run_model"))):
        with guarded(f"candidate {spec}", f"{getattr(obj, '__name__', 'OBJECT')}()", BUILD):
            obj = obj()
    return obj


__all__ = ["BUILTINS", "REFERENCES", "Described", "load_candidate", "load_reference", "register"]
