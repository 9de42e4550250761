"""`verify`: streamed, layer-by-layer parity of a candidate implementation against a reference on one checkpoint.

Both sides are adapters behind one protocol (candidates/protocol.py, docs/candidates.md): the default pair is
gptoss_model against Transformers. Neither full model is ever built. For each decoder layer: read that layer's
weights (dequantising only its experts), have both sides build their layer from the same tensors, run every prompt
through
  - the reference, fed the reference's own input           -> the next reference input
  - the candidate, fed the same reference input ("isolated") -> a local bug shows at its own layer
  - the candidate, fed its own previous output ("accumulated") -> end-to-end drift
  - the candidate's KV cache, token by token ("cached")     -> where the layer has new_cache()
measure each component the candidate returns (columns.py runs, gate.check measures and places), free. The embedding, final
norm and LM head are handled the same way before and after the layers; the gate (gate.py) judges.
"""

import math
import platform
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gptoss_convert import __version__
from gptoss_convert.compare import router_agreement
from gptoss_convert.gate import COMPONENTS, Thresholds, check, check_logits, judge, row_ratios
from gptoss_convert.options import DTYPES, resolve_device_option
from gptoss_convert.prompts import all_prompts, load_tokenizer
from gptoss_convert.sources import read_manifest, resolve_source

SCHEMA_VERSION = 2
COLUMNS = ("isolated", "accumulated", "cached")
HEATMAP_MAX_BUCKETS = 256  # positions per prompt drawn in the report's layer x position heat-map

@dataclass
class LayerResult:
    index: int
    attention_type: str
    isolated: dict  # component -> gate.Checked (candidate fed the reference input); a missing component: not provided
    accumulated: dict  # component -> gate.Checked (candidate fed its own previous output)
    cached: dict  # component -> gate.Checked (KV cache, token by token); empty: no cache
    router: dict  # column -> RouterAgreement | None
    not_provided: list  # components the candidate did not return
    profile: list = field(default_factory=list, repr=False)  # per prompt: [T] max tolerance ratio (heat-map)

    # the isolated column's router agreement, under its earlier name (gate and goldens use .router)
    @property
    def router_isolated(self):
        return self.router.get("isolated")

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "attention_type": self.attention_type,
            **{column: {k: v.to_dict() for k, v in getattr(self, column).items()} for column in COLUMNS},
            "router": {c: (r.to_dict() if r is not None else None) for c, r in self.router.items()},
            "not_provided": self.not_provided,
        }


@dataclass
class VerifyResult:
    thresholds: Thresholds
    device: str
    checkpoint: dict
    prompts: list  # [{"text": str | None, "token_ids": [...]}]
    candidate: dict = field(default_factory=dict)  # name, version, source, provides
    reference: dict = field(default_factory=dict)
    window: int = 0
    layers: list = field(default_factory=list)
    embedding: object = None  # gate.Checked | None (not provided)
    final_norm: object = None
    head: object = None
    logits: object = None  # gate.Checked (of LogitMetrics) | None
    logits_path: str = ""
    verdict: object = None
    seconds: float = 0.0
    peak_rss_bytes: int = 0
    peak_gpu_bytes: int | None = None

    @property
    def passed(self) -> bool:
        return bool(self.verdict and self.verdict.passed)

    def to_dict(self) -> dict:
        t = self.thresholds.resolved()
        report = {
            "schema_version": SCHEMA_VERSION,
            "passed": self.passed,
            "atol": t.atol,
            "rtol": t.rtol,
            "max_kl": t.max_kl,
            "min_top1": t.min_top1,
            "dtype": t.dtype,
            "device": self.device,
            "candidate": self.candidate,
            "reference": self.reference,
            "checkpoint": self.checkpoint,
            "versions": {"gptoss_convert": __version__, "torch": torch.__version__, "python": platform.python_version()},
            "prompts": self.prompts,
            "sliding_window": self.window,
            "embedding": _maybe(self.embedding),
            "layers": [layer.to_dict() for layer in self.layers],
            "final_norm": _maybe(self.final_norm),
            "head": _maybe(self.head),
            "logits": _maybe(self.logits),
            "logits_path": self.logits_path,
            "heatmap": heatmap(self.layers, self.prompts),
            "verdict": self.verdict.to_dict(),
            "timing": {
                "seconds": round(self.seconds, 3),
                "peak_rss_bytes": self.peak_rss_bytes,
                "peak_gpu_bytes": self.peak_gpu_bytes,
            },
        }
        return report  # the verify command adds "baseline" (baseline.baseline_deltas) when asked


def _maybe(metrics):
    return metrics.to_dict() if metrics is not None else None


# ---- the pipeline -----------------------------------------------------------------------------------------------


def run_verify(source, thresholds: Thresholds, device="auto", prompts=None, token_ids_file=None, progress=True,
               candidate="gptoss_model", reference="transformers", check_pins=True, chats=(), messages_file=None):
    """Verify `candidate` (a SPEC, docs/candidates.md) against `reference` on checkpoint `source` (tiny | a
    downloaded name | a directory). `progress`: True / False / None (a bar on a terminal, plain lines elsewhere).
    Returns a VerifyResult with its verdict."""
    from gptoss_convert.candidates import load_candidate, load_reference
    from gptoss_convert.candidates.protocol import Context
    from gptoss_convert.checkpoint import open_checkpoint
    from gptoss_convert.columns import Implementation
    from gptoss_convert.remap import audit

    started = time.time()
    device = resolve_device_option(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    dtype = DTYPES[thresholds.dtype]
    cand = Implementation("candidate", *load_candidate(candidate), dtype)
    ref = Implementation("reference", *load_reference(reference), dtype)
    path = resolve_source(source)
    ckpt = open_checkpoint(path)
    source_map = audit(ckpt)
    config = ckpt.config.replace(implementation="eager")
    tokenizer = load_tokenizer(path, ckpt.side_files)
    prompt_list = all_prompts(ckpt, config, tokenizer, prompts, token_ids_file, chats, messages_file)  # prompts.py
    context = Context(path, config, dtype, device)
    ref.setup(context)
    cand.setup(context)
    result = VerifyResult(thresholds, device, describe_checkpoint(path, ckpt), prompt_list,
                          candidate=describe_implementation(cand), reference=describe_implementation(ref),
                          window=config.sliding_window)
    if check_pins:  # a download of a pinned official revision: its files against the pins (weights hashed above)
        from gptoss_convert import pins

        hashed = {f["path"]: f["sha256"] for f in result.checkpoint["files"]}
        pins.check_checkpoint(ckpt.root, result.checkpoint["provenance"], known=hashed, progress=progress)
    with torch.no_grad():
        streams = Streams(config, prompt_list, device, Weights(ckpt, source_map, dtype, device))
        embed_stage(result, streams, cand, ref, thresholds)
        layer_range = range(config.num_hidden_layers)
        if progress is not False:
            from gptoss_convert.progress import progress_bar

            layer_range = progress_bar(layer_range, desc="verify", unit="layer", enabled=progress, leave=False)
        for i in layer_range:
            result.layers.append(layer_stage(i, streams, cand, ref, thresholds))
        final_stage(result, streams, cand, ref, thresholds)
    parts = {"embedding": result.embedding, "final_norm": result.final_norm, "head": result.head}
    result.verdict = judge(result.layers, result.logits, thresholds, window=config.sliding_window, model_parts=parts,
                           logits_through_candidate=streams.through_candidate or streams.whole is not None)
    result.seconds = time.time() - started
    result.peak_rss_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if device == "cuda":
        result.peak_gpu_bytes = torch.cuda.max_memory_allocated()
    return result


def describe_implementation(impl) -> dict:
    settings = getattr(impl.obj, "settings", None)
    return {**impl.described.to_dict(), "provides": impl.capabilities(),
            **({"settings": dict(settings)} if isinstance(settings, dict) else {})}


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


class Weights:
    """One layer's (or one global) tensors at a time, under the checkpoint's HF names, on the compute device."""

    def __init__(self, ckpt, source_map, dtype, device):
        self.ckpt, self.source_map, self.dtype, self.device = ckpt, source_map, dtype, device

    def layer(self, i: int) -> dict:
        from gptoss_convert.remap import layer_tensors

        dequantize_on = self.device if self.device != "cpu" else None  # MXFP4 experts unpack on the GPU if any
        tensors = layer_tensors(self.ckpt, i, self.dtype, self.source_map, device=dequantize_on)
        return {k: v.to(self.device) for k, v in tensors.items()}

    def named(self, name: str) -> dict:
        from gptoss_convert.remap import global_tensors

        return {name: global_tensors(self.ckpt, self.dtype, self.source_map, names=(name,))[name].to(self.device)}


class Streams:
    """The per-prompt hidden states flowing through the layers: the reference's and the candidate's accumulated
    ones (or, for a whole-model candidate, its run_model outputs)."""

    def __init__(self, config, prompts, device, weights):
        self.config, self.device, self.weights = config, device, weights
        self.ids = [torch.tensor([p["token_ids"]], device=device) for p in prompts]  # [1, T] each
        self.positions = [torch.arange(ids.shape[1], device=device)[None] for ids in self.ids]  # [1, T] each
        self.rows = [(p, t) for p, ids in enumerate(self.ids) for t in range(ids.shape[1])]
        self.ref_x, self.cand_x, self.whole = [], [], None
        self.through_candidate = False  # whether cand_x went through a layer of the candidate (its own stream)


def _stack(tensors) -> torch.Tensor:
    """Per-prompt [1, T, C] -> [ΣT, C] float32 on the CPU, for measuring."""
    return torch.cat([t.reshape(-1, t.shape[-1]).float().cpu() for t in tensors])


def embed_stage(result, streams, cand, ref, thresholds):
    tensors = streams.weights.named("model.embed_tokens.weight")
    streams.ref_x = [ref.model_part("embed", tensors, ids, ids.shape[1]) for ids in streams.ids]
    if not cand.has("build_layer"):  # whole-model candidate: run it once per prompt, compare its states below
        streams.whole = [cand.run_model(ids) for ids in streams.ids]
        ours = [w["hidden_states"][0] for w in streams.whole] if "hidden_states" in streams.whole[0] else None
    elif cand.has("embed"):
        ours = [cand.model_part("embed", tensors, ids, ids.shape[1]) for ids in streams.ids]
    else:
        ours = None
    streams.cand_x = ours if ours is not None else [x.clone() for x in streams.ref_x]
    if ours is not None:
        result.embedding = check(_stack(ours), _stack(streams.ref_x), streams.rows, thresholds)


def layer_stage(i, streams, cand, ref, thresholds) -> LayerResult:
    config = streams.config
    kind = config.layer_types[i]
    tensors = streams.weights.layer(i)
    ref_layer = ref.build_layer(i, tensors)
    ref_out = [ref.run(ref_layer, i, x, pos) for x, pos in zip(streams.ref_x, streams.positions)]
    outputs = {column: None for column in COLUMNS}
    if cand.has("build_layer"):
        layer = cand.build_layer(i, tensors)
        outputs["isolated"] = [cand.run(layer, i, x, pos) for x, pos in zip(streams.ref_x, streams.positions)]
        # a bit-identical input gives the isolated output again (a candidate is a function): skip the second run
        outputs["accumulated"] = [iso if torch.equal(x, ref_x) else cand.run(layer, i, x, pos) for iso, x, ref_x, pos
                                  in zip(outputs["isolated"], streams.cand_x, streams.ref_x, streams.positions)]
        if callable(getattr(layer, "new_cache", None)):
            outputs["cached"] = _cached_column(cand, layer, i, streams)
        del layer
    elif streams.whole and "hidden_states" in streams.whole[0]:
        outputs["accumulated"] = [{"layer_output": w["hidden_states"][i + 1]} for w in streams.whole]
    del ref_layer, tensors
    result = _measure_layer(i, kind, outputs, ref_out, streams, thresholds)
    streams.ref_x = [out["layer_output"] for out in ref_out]
    if outputs["accumulated"] and all("layer_output" in o for o in outputs["accumulated"]):
        streams.cand_x = [o["layer_output"] for o in outputs["accumulated"]]
        streams.through_candidate = True
    else:  # no layer output to carry on: the next layer's accumulated input is the reference's
        streams.cand_x = streams.ref_x
    return result


def _cached_column(cand, layer, i, streams) -> list:
    """Per prompt, the cached run over the first `covered` tokens (columns.cached_split); None for short ones."""
    from gptoss_convert.columns import cached_split

    runs = []
    for x, pos in zip(streams.ref_x, streams.positions):
        split = cached_split(x.shape[1], streams.config.sliding_window)
        runs.append(None if split is None else cand.run_cached(layer, i, x[:, :split[1]], pos[:, :split[1]], split[0]))
    return runs


def _measure_layer(i, kind, outputs, ref_out, streams, thresholds) -> LayerResult:
    measured, routers = {}, {}
    for column in COLUMNS:
        measured[column], routers[column] = _measure_column(outputs[column], ref_out, streams, thresholds)
    provided = set().union(*(set(o) for o in (outputs["isolated"] or outputs["accumulated"] or [{}]) if o))
    not_provided = [c for c in COMPONENTS if c not in provided]
    result = LayerResult(i, kind, measured["isolated"], measured["accumulated"], measured["cached"], routers,
                         not_provided)
    judged = outputs["isolated"] or outputs["accumulated"]
    if judged:
        result.profile = _profile(judged, ref_out, streams, thresholds)
    return result


def _measure_column(outs, ref_out, streams, thresholds):
    """Per-prompt component dicts of one column -> ({component: Metrics}, RouterAgreement | None). A prompt the
    column skipped (None) and tokens it did not cover are left out of both sides."""
    if not outs:
        return {}, None
    pairs = [(o, r, p) for p, (o, r) in enumerate(zip(outs, ref_out)) if o is not None]
    lengths = [next((v.shape[1] for v in o.values()), 0) for o, _, _ in pairs]
    rows = [(p, t) for (_, _, p), n in zip(pairs, lengths) for t in range(n)]
    metrics, router = {}, None
    names = set.intersection(*(set(o) for o, _, _ in pairs))
    for name in (c for c in COMPONENTS if c in names):
        ours = [_dense(o, name, streams.config) for o, _, _ in pairs]
        ref = [_dense(r, name, streams.config)[:, :n] for (_, r, _), n in zip(pairs, lengths)]
        if name == "expert_indices":
            ref_logits = [r["router_logits"][:, :n] for (_, r, _), n in zip(pairs, lengths)]
            router = router_agreement(_stack(ours).long(), _stack(ref).long(), _stack(ref_logits), streams.weights.dtype,
                                      rows)
            continue
        metrics[name] = check(_stack(ours), _stack(ref), rows, thresholds)
    return metrics, router


def _dense(out: dict, name: str, config) -> torch.Tensor:
    """expert_weights become [1, T, E] (zero for experts not chosen), so the order of the K slots does not matter."""
    if name != "expert_weights":
        return out[name]
    if "expert_indices" not in out:
        return out[name].sort(dim=-1, descending=True).values  # no indices: compare the sorted weights
    dense = torch.zeros(*out[name].shape[:-1], config.num_local_experts, dtype=out[name].dtype,
                        device=out[name].device)
    return dense.scatter(-1, out["expert_indices"].long(), out[name])


def _profile(outs, ref_out, streams, thresholds) -> list:
    """Per prompt: per position, the largest tolerance ratio over the layer's measured tensor components."""
    profile = []
    for o, r in zip(outs, ref_out):
        ratios = [row_ratios(_stack([_dense(o, n, streams.config)]), _stack([_dense(r, n, streams.config)]),
                             thresholds.atol, thresholds.rtol)
                  for n in COMPONENTS if n in o and n != "expert_indices"]
        profile.append(torch.stack(ratios).amax(dim=0).tolist() if ratios else [])
    return profile


def final_stage(result, streams, cand, ref, thresholds):
    rows = streams.rows
    norm = streams.weights.named("model.norm.weight")
    ref_h = [ref.model_part("final_norm", norm, x, x.shape[1]) for x in streams.ref_x]
    if cand.has("final_norm"):
        iso = [cand.model_part("final_norm", norm, x, x.shape[1]) for x in streams.ref_x]
        result.final_norm = check(_stack(iso), _stack(ref_h), rows, thresholds)
    head = streams.weights.named("lm_head.weight")
    ref_logits = [ref.model_part("head", head, h, h.shape[1]) for h in ref_h]
    if cand.has("head"):
        result.head = check(_stack([cand.model_part("head", head, h, h.shape[1]) for h in ref_h]),
                            _stack(ref_logits), rows, thresholds)
    ours, result.logits_path = _end_to_end_logits(streams, cand, ref, norm, head)
    if ours is not None:
        result.logits = check_logits(_stack(ours), _stack(ref_logits), rows, thresholds)


def _end_to_end_logits(streams, cand, ref, norm, head):
    """The candidate's logits from its own stream, and how they were made (its parts, or the reference's where it
    has none)."""
    if streams.whole is not None:
        if "logits" in streams.whole[0]:
            return [w["logits"] for w in streams.whole], "candidate run_model()"
        if "hidden_states" not in streams.whole[0]:
            return None, "not provided"
    norm_side = cand if cand.has("final_norm") else ref
    head_side = cand if cand.has("head") else ref
    hidden = [norm_side.model_part("final_norm", norm, x, x.shape[1]) for x in streams.cand_x]
    logits = [head_side.model_part("head", head, h, h.shape[1]) for h in hidden]
    path = f"{norm_side.who.split()[0]} final_norm, {head_side.who.split()[0]} head"
    return logits, path


def heatmap(layers: list, prompts: list) -> dict:
    """The layer x position picture of the judged column: per prompt, per layer, log10 of the largest tolerance
    ratio in each bucket of positions (> 0 fails the float32 gate), clipped to [-12, 12]. Long prompts are drawn
    in at most HEATMAP_MAX_BUCKETS buckets (the max over each)."""
    out = []
    for p, prompt in enumerate(prompts):
        length = len(prompt["token_ids"])
        width = max(1, math.ceil(length / HEATMAP_MAX_BUCKETS))
        rows = []
        for layer in layers:
            ratios = layer.profile[p] if p < len(layer.profile) else []
            rows.append([_log_ratio(max(ratios[s:s + width])) for s in range(0, len(ratios), width)])
        out.append({"prompt": p, "length": length, "bucket": width, "log10_ratio": rows})
    return {"column": "isolated", "prompts": out}


def _log_ratio(ratio: float) -> float:
    if ratio <= 0:
        return -12.0
    return round(max(-12.0, min(12.0, math.log10(ratio))), 2) if math.isfinite(ratio) else 12.0
