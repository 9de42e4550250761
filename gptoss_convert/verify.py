"""`verify`: streamed, layer-by-layer parity of gptoss_model against Transformers on one checkpoint.

Neither full model is ever built. For each decoder layer: read that layer's weights (dequantising only its experts),
build Transformers' layer and ours around the same tensors, run every prompt through
  - the reference, fed the reference's own input        -> the next reference input
  - ours, fed the same reference input   ("isolated")   -> a local bug shows at its own layer
  - ours, fed our own previous output    ("accumulated") -> end-to-end drift
record each component (attention, router, MoE, layer output) on both sides through forward hooks, measure, free.
The embedding, final norm and LM head are handled the same way before and after the layers.
"""

import platform
import resource
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from gptoss_convert import __version__
from gptoss_convert.compare import router_agreement
from gptoss_convert.errors import InputError
from gptoss_convert.gate import COMPONENTS, Thresholds, check, check_logits, judge
from gptoss_convert.options import DTYPES, resolve_device_option
from gptoss_convert.sources import read_manifest, resolve_source

SCHEMA_VERSION = 1

# Used when --prompt/--token-ids are not given. Tokenized with the checkpoint's tokenizer.json when there is one.
DEFAULT_TEXT = (
    "The quick brown fox jumps over the lazy dog. A verification tool compares two implementations of one model, "
    "layer by layer, and says exactly where they part ways. Attention sinks, sliding windows, rotary embeddings "
    "and routed experts all have to agree before the logits can. "
)


@dataclass
class LayerResult:
    index: int
    attention_type: str
    isolated: dict  # component -> gate.Checked (ours fed the reference input)
    accumulated: dict  # component -> gate.Checked (ours fed its own previous output)
    router_isolated: object  # RouterAgreement
    router_accumulated: object

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "attention_type": self.attention_type,
            "isolated": {k: v.to_dict() for k, v in self.isolated.items()},
            "accumulated": {k: v.to_dict() for k, v in self.accumulated.items()},
            "router": {"isolated": self.router_isolated.to_dict(), "accumulated": self.router_accumulated.to_dict()},
        }


@dataclass
class VerifyResult:
    thresholds: Thresholds
    device: str
    checkpoint: dict
    prompts: list  # [{"text": str | None, "token_ids": [...]}]
    layers: list = field(default_factory=list)
    embedding: object = None
    final_norm: object = None
    logits: object = None
    verdict: object = None
    seconds: float = 0.0
    peak_rss_bytes: int = 0
    peak_gpu_bytes: int | None = None

    @property
    def passed(self) -> bool:
        return bool(self.verdict and self.verdict.passed)

    def to_dict(self) -> dict:
        t = self.thresholds.resolved()
        from gptoss_convert.reference import ATTENTION_IMPLEMENTATION, EXPERTS_IMPLEMENTATION, transformers_version

        return {
            "schema_version": SCHEMA_VERSION,
            "passed": self.passed,
            "atol": t.atol,
            "rtol": t.rtol,
            "max_kl": t.max_kl,
            "min_top1": t.min_top1,
            "dtype": t.dtype,
            "device": self.device,
            "checkpoint": self.checkpoint,
            "versions": {
                "gptoss_convert": __version__,
                "torch": torch.__version__,
                "transformers": transformers_version(),
                "python": platform.python_version(),
            },
            "reference": {"attn_implementation": ATTENTION_IMPLEMENTATION, "experts_implementation": EXPERTS_IMPLEMENTATION},
            "prompts": self.prompts,
            "embedding": self.embedding.to_dict(),
            "layers": [layer.to_dict() for layer in self.layers],
            "final_norm": self.final_norm.to_dict(),
            "logits": self.logits.to_dict(),
            "verdict": self.verdict.to_dict(),
            "timing": {
                "seconds": round(self.seconds, 3),
                "peak_rss_bytes": self.peak_rss_bytes,
                "peak_gpu_bytes": self.peak_gpu_bytes,
            },
        }


# ---- inputs ---------------------------------------------------------------------------------------------------


def load_tokenizer(root: Path, side_files):
    candidates = [p for p in side_files if Path(p).name == "tokenizer.json"] + [root / "tokenizer.json"]
    for path in candidates:
        if Path(path).is_file():
            from tokenizers import Tokenizer

            return Tokenizer.from_file(str(path))
    return None


def default_prompts(config, tokenizer) -> list:
    """Two prompts: one shorter than the sliding window, one crossing it twice (window bugs only show there)."""
    short_len, long_len = max(4, config.sliding_window // 2), 2 * config.sliding_window + 16
    if tokenizer is not None:
        ids = tokenizer.encode(DEFAULT_TEXT).ids
        while len(ids) < long_len:
            ids = ids + ids
        ids = [i for i in ids if i < config.vocab_size] or [0]
        return [{"text": None, "token_ids": ids[:short_len]}, {"text": None, "token_ids": (ids * long_len)[:long_len]}]
    generator = torch.Generator().manual_seed(0)
    top = min(config.vocab_size, 199998)  # plain text ids, below the special tokens
    return [{"text": None, "token_ids": torch.randint(0, top, (n,), generator=generator).tolist()}
            for n in (short_len, long_len)]


def parse_prompts(texts, token_ids_file, config, tokenizer) -> list:
    prompts = []
    for text in texts or ():
        if tokenizer is not None:
            prompts.append({"text": text, "token_ids": tokenizer.encode(text).ids})
        else:
            try:
                prompts.append({"text": None, "token_ids": [int(t) for t in text.replace(",", " ").split()]})
            except ValueError:
                raise InputError(
                    f"--prompt {text!r}: this checkpoint has no tokenizer.json, so prompts must be token ids "
                    "(e.g. --prompt '1 2 3')"
                ) from None
    if token_ids_file:
        prompts += _read_token_ids(Path(token_ids_file))
    if not prompts:
        return default_prompts(config, tokenizer)
    for i, prompt in enumerate(prompts):
        ids = prompt["token_ids"]
        if not ids:
            raise InputError(f"prompt {i} is empty")
        bad = [t for t in ids if not 0 <= t < config.vocab_size]
        if bad:
            raise InputError(f"prompt {i}: token id {bad[0]} is outside the vocabulary 0..{config.vocab_size - 1}")
    return prompts


def _read_token_ids(path: Path) -> list:
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"--token-ids {path}: cannot read a JSON list of token ids ({error})") from None
    rows = data if isinstance(data, list) and data and isinstance(data[0], list) else [data]
    if not all(isinstance(r, list) and r and all(isinstance(t, int) for t in r) for r in rows):
        raise InputError(f"--token-ids {path}: expected a JSON list of ints, or a list of such lists")
    return [{"text": None, "token_ids": r} for r in rows]


# ---- capturing components through forward hooks ----------------------------------------------------------------


@contextmanager
def capture(layer):
    """Record attention, router logits/indices and MoE output of one decoder layer (ours or Transformers')."""
    seen = {}

    def first(output):
        return output[0] if isinstance(output, tuple) else output

    def on_attention(module, args, output):
        seen["attention"] = first(output)

    def on_router(module, args, output):
        seen["router_logits"], seen["router_indices"] = output[0], output[2]

    def on_mlp(module, args, output):
        seen["moe"] = first(output)

    handles = [
        layer.self_attn.register_forward_hook(on_attention),
        layer.mlp.router.register_forward_hook(on_router),
        layer.mlp.register_forward_hook(on_mlp),
    ]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


# ---- the pipeline -----------------------------------------------------------------------------------------------


def run_verify(source, thresholds: Thresholds, device="auto", prompts=None, token_ids_file=None, progress=True):
    """Verify checkpoint `source` (tiny | a downloaded name | a directory). Returns a VerifyResult with its verdict."""
    from gptoss_convert.checkpoint import open_checkpoint
    from gptoss_convert.remap import audit

    started = time.time()
    device = resolve_device_option(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    dtype = DTYPES[thresholds.dtype]
    path = resolve_source(source)
    ckpt = open_checkpoint(path)
    source_map = audit(ckpt)
    config = ckpt.config.replace(implementation="eager")
    tokenizer = load_tokenizer(path, ckpt.side_files)
    prompt_list = parse_prompts(prompts, token_ids_file, config, tokenizer)
    result = VerifyResult(thresholds, device, describe_checkpoint(path, ckpt), prompt_list)
    with torch.no_grad():
        streams = Streams(config, prompt_list, device, dtype)
        embed_stage(result, streams, ckpt, source_map, thresholds)
        layer_range = range(config.num_hidden_layers)
        if progress:
            from tqdm import tqdm

            layer_range = tqdm(layer_range, desc="verify", unit="layer", leave=False)
        for i in layer_range:
            result.layers.append(layer_stage(i, streams, ckpt, source_map, thresholds))
        final_stage(result, streams, ckpt, source_map, thresholds)
    result.verdict = judge(result.layers, result.logits, thresholds)
    result.seconds = time.time() - started
    result.peak_rss_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if device == "cuda":
        result.peak_gpu_bytes = torch.cuda.max_memory_allocated()
    return result


def describe_checkpoint(path: Path, ckpt) -> dict:
    files = []
    for file, digest in ckpt.sha256s().items():
        files.append({"path": file, "size": (ckpt.root / file).stat().st_size, "sha256": digest})
    return {
        "path": str(path),
        "layout": ckpt.layout,
        "experts": ckpt.experts,
        "files": files,
        "config": ckpt.config.to_hf_config(),
        "provenance": read_manifest(path),
    }


class Streams:
    """The per-prompt hidden states flowing through the layers: the reference's and our accumulated ones, plus
    each side's position embeddings and masks (computed once; they depend only on the prompt)."""

    def __init__(self, config, prompts, device, dtype):
        from gptoss_convert.reference import Reference
        from gptoss_model.model import GptOssRotaryEmbedding, attention_masks

        self.config, self.device, self.dtype = config, device, dtype
        self.reference = Reference(config, device)
        self.ids = [torch.tensor([p["token_ids"]], device=device) for p in prompts]
        self.rows = [(p, t) for p, ids in enumerate(self.ids) for t in range(ids.shape[1])]
        rotary = GptOssRotaryEmbedding(config, device=device)
        self.ours_ctx, self.ref_ctx = [], []
        for ids in self.ids:
            positions = torch.arange(ids.shape[1], device=device)[None]
            probe = torch.zeros(1, ids.shape[1], config.hidden_size, device=device, dtype=dtype)
            masks, _ = attention_masks(config, ids.shape, None, None, device)
            self.ours_ctx.append((masks, rotary(positions, dtype)))
            self.ref_ctx.append((positions, self.reference.masks(probe, positions),
                                 self.reference.position_embeddings(probe, positions)))
        self.ref_x, self.our_x = [], []


def _stack(tensors) -> torch.Tensor:
    """Per-prompt [1, T, C] (or [T, C]) -> [ΣT, C] float32 on the CPU, for measuring."""
    return torch.cat([t.reshape(-1, t.shape[-1]).float().cpu() for t in tensors])


def _strip(tensors: dict, prefix: str) -> dict:
    return {name[len(prefix):]: t for name, t in tensors.items()}


def _read_global(ckpt, name, dtype, source_map):
    from gptoss_convert.remap import global_tensors

    return global_tensors(ckpt, dtype, source_map, names=(name,))[name]


def embed_stage(result, streams, ckpt, source_map, thresholds):
    weight = _read_global(ckpt, "model.embed_tokens.weight", streams.dtype, source_map)
    weight = weight.to(streams.device)
    ref_embed = torch.nn.Embedding.from_pretrained(weight)  # Transformers' GptOssModel uses a plain nn.Embedding
    streams.ref_x = [ref_embed(ids) for ids in streams.ids]
    streams.our_x = [F.embedding(ids, weight) for ids in streams.ids]
    result.embedding = check(_stack(streams.our_x), _stack(streams.ref_x), streams.rows, thresholds)


def layer_stage(i, streams, ckpt, source_map, thresholds) -> LayerResult:
    from gptoss_convert.remap import layer_tensors
    from gptoss_model.model import GptOssDecoderLayer

    config, device, dtype = streams.config, streams.device, streams.dtype
    dequantize_on = device if device != "cpu" else None  # MXFP4 experts unpack on the GPU when there is one
    tensors = layer_tensors(ckpt, i, dtype, source_map, device=dequantize_on)
    tensors = {k: v.to(device) for k, v in _strip(tensors, f"model.layers.{i}.").items()}
    with torch.device("meta"):
        ours = GptOssDecoderLayer(config, i)
    ours.load_state_dict(tensors, strict=True, assign=True)
    ref = streams.reference.decoder_layer(i, tensors)
    kind = config.layer_types[i]
    seen = {"ref": [], "iso": [], "acc": []}
    outputs = {"ref": [], "iso": [], "acc": []}
    for p in range(len(streams.ids)):
        positions, ref_masks, ref_pe = streams.ref_ctx[p]
        our_masks, our_pe = streams.ours_ctx[p]
        with capture(ref) as got:
            outputs["ref"].append(streams.reference.run_layer(ref, streams.ref_x[p], ref_masks[kind], positions, ref_pe))
        seen["ref"].append(got)
        for column, x in (("iso", streams.ref_x[p]), ("acc", streams.our_x[p])):
            with capture(ours) as got:
                outputs[column].append(ours(x, our_pe, our_masks[kind]))
            seen[column].append(got)
    streams.ref_x, streams.our_x = outputs["ref"], outputs["acc"]
    result = LayerResult(
        i, kind,
        isolated=_components(seen["iso"], seen["ref"], outputs["iso"], outputs["ref"], streams, thresholds),
        accumulated=_components(seen["acc"], seen["ref"], outputs["acc"], outputs["ref"], streams, thresholds),
        router_isolated=_routing(seen["iso"], seen["ref"], dtype),
        router_accumulated=_routing(seen["acc"], seen["ref"], dtype),
    )
    del ours, ref, tensors
    return result


def _components(ours_seen, ref_seen, ours_out, ref_out, streams, thresholds) -> dict:
    rows = streams.rows
    metrics = {}
    for component in ("attention", "router_logits", "moe"):
        metrics[component] = check(
            _stack([s[component] for s in ours_seen]), _stack([s[component] for s in ref_seen]), rows, thresholds
        )
    metrics["layer_output"] = check(_stack(ours_out), _stack(ref_out), rows, thresholds)
    return {c: metrics[c] for c in COMPONENTS if c in metrics}


def _routing(ours_seen, ref_seen, dtype):
    ours_idx = torch.cat([s["router_indices"].cpu() for s in ours_seen])
    ref_idx = torch.cat([s["router_indices"].cpu() for s in ref_seen])
    ref_logits = torch.cat([s["router_logits"].float().cpu() for s in ref_seen])
    return router_agreement(ours_idx, ref_idx, ref_logits, dtype)


def final_stage(result, streams, ckpt, source_map, thresholds):
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssRMSNorm as RefRMSNorm

    from gptoss_model.model import GptOssRMSNorm

    config, device, rows, dtype = streams.config, streams.device, streams.rows, streams.dtype
    norm_weight = _read_global(ckpt, "model.norm.weight", dtype, source_map).to(device)
    ours_norm = GptOssRMSNorm(config.hidden_size, config.rms_norm_eps, device=device, dtype=dtype)
    ref_norm = RefRMSNorm(config.hidden_size, eps=config.rms_norm_eps).to(device=device, dtype=dtype)
    ours_norm.weight.copy_(norm_weight)
    ref_norm.weight.copy_(norm_weight)
    ref_h = [ref_norm(x) for x in streams.ref_x]
    iso_h = [ours_norm(x) for x in streams.ref_x]
    acc_h = [ours_norm(x) for x in streams.our_x]
    result.final_norm = check(_stack(iso_h), _stack(ref_h), rows, thresholds)
    lm_head = _read_global(ckpt, "lm_head.weight", dtype, source_map).to(device)
    ref_logits = _stack([F.linear(h, lm_head) for h in ref_h])  # Transformers' lm_head is a bias-free nn.Linear
    our_logits = _stack([F.linear(h, lm_head) for h in acc_h])
    del lm_head
    result.logits = check_logits(our_logits, ref_logits, rows, thresholds)
