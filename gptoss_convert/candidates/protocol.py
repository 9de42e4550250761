"""The adapter protocol: how any gpt-oss implementation plugs into `verify` (docs/candidates.md is the guide).

A *candidate* is any object with (all optional except as noted):

    name, version, source                       strings for the report (defaults: the SPEC, "unknown", the file)
    setup(context)                              once, before anything else: context is a `Context`
    build_layer(index, config, tensors)         -> a layer object (see below); `tensors` are that layer's weights
    embed(tensors, token_ids [B, T])            -> hidden [B, T, H];        tensors {"model.embed_tokens.weight"}
    final_norm(tensors, hidden [B, T, H])       -> hidden [B, T, H];        tensors {"model.norm.weight"}
    head(tensors, hidden [B, T, H])             -> logits [B, T, V];        tensors {"lm_head.weight"}
    run_model(token_ids [B, T])                 -> {"hidden_states": [L + 1 x [B, T, H]], "logits": [B, T, V]}
                                                   (either key may be missing): the whole-model fallback

A candidate must have build_layer or run_model. A layer object has

    run(hidden [B, T, H], position_ids [B, T], cache=None) -> dict with any of LAYER_COMPONENTS
    new_cache()                                 optional: an object `run(..., cache=...)` keeps keys/values in

The reference (Transformers, OpenAI) implements the same protocol and provides everything, so verify, compare, gate
and report never name an implementation. Whatever a candidate does not return is reported "not provided", never
passed. Output checks (type, shape, dtype) live here too (NaN/Inf are measured, not refused), so every adapter gets the same one-line errors.
"""

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from gptoss_convert.errors import CandidateError, InputError

# What one decoder layer can expose, in forward order. Shapes as returned by run() for hidden [B, T, H]:
LAYER_COMPONENTS = {  # name -> its shape and meaning; component_shape() gives the sizes
    "attention": "[B, T, H] the attention block's output (after o_proj, before the residual add)",
    "router_logits": "[B, T, E] router logits (before top-k)",
    "expert_indices": "[B, T, K] the K selected experts per token (any order)",
    "expert_weights": "[B, T, K] their routing weights, in the order of expert_indices (they sum to 1)",
    "moe": "[B, T, H] the MoE block's output (before the residual add)",
    "layer_output": "[B, T, H] the layer's output (the residual stream after the layer)",
}


def component_shape(name: str, config, batch: int, tokens: int) -> tuple:
    """The shape run()/embed()/final_norm()/head() must return for `name`, for hidden [batch, tokens, H]."""
    last = {"router_logits": config.num_local_experts, "expert_indices": config.num_experts_per_tok,
            "expert_weights": config.num_experts_per_tok, "logits": config.vocab_size}.get(name, config.hidden_size)
    return (batch, tokens, last)


@dataclass(frozen=True)
class Context:
    """What setup() is told: the checkpoint being verified and where/how to compute."""

    checkpoint_dir: Path  # the checkpoint directory (HF layout, original/, or gptoss_model's own format)
    config: object  # gptoss_model.config.GPTOssConfig: HF field names; .to_hf_config() gives config.json's dict
    dtype: torch.dtype  # the compute dtype every tensor handed over has (torch.float32 or torch.bfloat16)
    device: str  # "cpu" or "cuda": where the tensors handed over live


@dataclass(frozen=True)
class Described:
    """A candidate or reference as the report names it."""

    name: str
    version: str
    source: str  # the file (or package) it was loaded from

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "source": self.source}


def describe(obj, spec: str, source: str = "unknown") -> Described:
    """The candidate's own name/version/source attributes where it has them, else the SPEC and the file."""
    return Described(str(getattr(obj, "name", spec)), str(getattr(obj, "version", "unknown")),
                     str(getattr(obj, "source", source)))


def provides(obj, method: str) -> bool:
    return callable(getattr(obj, method, None))


def check_candidate(obj, spec: str) -> None:
    """A candidate needs build_layer or run_model (exit 2 otherwise)."""
    if not (provides(obj, "build_layer") or provides(obj, "run_model")):
        raise InputError(f"candidate {spec}: {type(obj).__name__} has neither build_layer() nor run_model(); "
                         "see docs/candidates.md")


BUILD, RUN = 2, 1  # exit codes: a candidate that cannot be loaded or built; one that fails while running


@contextmanager
def guarded(who: str, where: str, exit_code: int):
    """Run candidate code; any exception becomes a one-line CandidateError naming `who` ("candidate X") and where, with
    `exit_code` (BUILD or RUN). GPTOSS_CONVERT_DEBUG=1 shows the original traceback (the CLI re-raises)."""
    try:
        yield
    except CandidateError:
        raise
    except Exception as error:  # a candidate is foreign code: anything it raises is its failure, reported as one line
        text = str(error).strip()
        message = f": {text.splitlines()[0]}" if text else ""
        raise CandidateError(f"{who}: {where} raised {type(error).__name__}{message}", exit_code) from error


def check_tensor(who: str, where: str, name: str, value, shape: tuple, dtype: torch.dtype | None = None):
    """One returned tensor: a torch.Tensor of the expected shape (a -1 matches any size) and, if floating, of
    `dtype`. Raises CandidateError with exit code 1 naming candidate, place and component. NaN/Inf are not refused
    here: they are measured (an infinite error) so the report still shows where they start."""
    if not isinstance(value, torch.Tensor):
        raise CandidateError(f"{who}: {where} {name} is a {type(value).__name__}, expected a torch.Tensor",
                             exit_code=1)
    if value.dim() != len(shape) or any(s != -1 and s != v for s, v in zip(shape, value.shape)):
        want = "[" + ", ".join("*" if s == -1 else str(s) for s in shape) + "]"
        raise CandidateError(f"{who}: {where} {name} has shape {list(value.shape)}, expected {want}",
                             exit_code=1)
    if dtype is not None and value.is_floating_point() and value.dtype != dtype:
        raise CandidateError(f"{who}: {where} {name} has dtype {str(value.dtype)[6:]}, expected "
                             f"{str(dtype)[6:]}", exit_code=1)
    return value
