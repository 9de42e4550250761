"""Check outputs against goldens: the same metrics, gate and report dict as `verify`, without the reference.

Two ways in:
  verify_goldens(...)   `verify --goldens DIR --candidate SPEC`: runs the candidate in process on the recorded inputs
  compare_files(...)    `compare --goldens DIR --outputs FILE`: reads what any implementation wrote (docs/goldens.md)
Both end in compare_outputs(): every name the goldens list is measured if provided, and listed "not provided"
otherwise (never passed); only the isolated (teacher-forced) column exists, since every layer ran on its recorded
input. The per-layer components are compared at the goldens' checked rows (components.rows), given either at every
row or at exactly those rows; reports name positions in their prompts, never indices into the checked rows.
Nothing here imports Transformers.
"""

import platform
import resource
import time
from pathlib import Path

import torch

from gptoss_convert import __version__
from gptoss_convert.errors import InputError, ParityError
from gptoss_convert.goldens_files import (LAYER_OUTPUTS, Goldens, is_checked, layer_name, load_goldens,
                                          output_names)


class _Layer:
    """What gate.judge reads of a layer (the fields of verify's LayerResult). One column is filled: isolated (each
    layer ran on its recorded input) or, for a whole-model candidate, accumulated (its own end-to-end states)."""

    def __init__(self, index, attention_type, column, metrics, router, missing, profile):
        self.index, self.attention_type, self.profile = index, attention_type, profile
        self.isolated, self.accumulated, self.cached = {}, {}, {}
        getattr(self, column).update(metrics)
        self.router = {column: router} if router is not None else {}
        self.not_provided = missing

    def to_dict(self) -> dict:
        columns = ("isolated", "accumulated", "cached")
        return {
            "index": self.index,
            "attention_type": self.attention_type,
            **{c: {k: v.to_dict() for k, v in getattr(self, c).items()} for c in columns},
            "router": {c: self.router[c].to_dict() if c in self.router else None for c in columns},
            "not_provided": self.not_provided,
        }


def not_provided(report: dict) -> list[str]:
    """The goldens names a report's candidate did not provide (per-layer components, null model parts)."""
    missing = [name for name in ("embedding", "final_norm", "logits") if report.get(name) is None]
    for layer in report["layers"]:
        missing += [layer_name(layer["index"], c) for c in layer["not_provided"]]
    return missing


def check_names_and_shapes(goldens: Goldens, outputs: dict, source: str) -> None:
    """Every output name must be one the goldens list (exit 2: the file does not follow the protocol) and have the
    expected tensor's shape (exit 1: a wrongly shaped component is a wrong result, named)."""
    if not outputs:
        raise InputError(f"{source}: holds no tensors; expected some of the names in {goldens.directory}/manifest.json "
                         "\"outputs\"")
    known = set(output_names(goldens.num_layers))
    for name in outputs:
        if name not in known:
            where = f"{goldens.directory}/manifest.json \"outputs\""
            raise InputError(f"{source}: unknown tensor {name!r}; expected names like "
                             f"{layer_name(0, 'attention')!r} (see {where})")
    every_row = len(goldens.rows)
    for name, value in outputs.items():
        want = list(goldens.expected[name].shape)
        allowed = [want, [every_row, *want[1:]]] if is_checked(name) else [want]
        if list(value.shape) not in allowed:
            expected = f"{want}" + (f" (the checked rows) or {allowed[1]} (every row)" if allowed[-1] != want else "")
            raise ParityError(f"{source}: {name} has shape {list(value.shape)}, expected {expected}")
        if name.endswith(".expert_indices") and value.is_floating_point():
            raise ParityError(f"{source}: {name} has dtype {value.dtype}, expected an integer dtype")


def at_checked_rows(goldens: Goldens, outputs: dict) -> dict:
    """Outputs with every per-layer component given at all T rows narrowed to the checked rows (components.rows)."""
    checked, every_row = goldens.inputs["components.rows"], len(goldens.rows)
    if len(checked) == every_row:
        return outputs
    return {name: value[checked] if is_checked(name) and value.shape[0] == every_row else value
            for name, value in outputs.items()}


def compare_outputs(goldens: Goldens, outputs: dict, thresholds, candidate: dict, source: str,
                    column: str = "isolated", head_logits=None) -> tuple[dict, object]:
    """-> (the report dict in verify's schema, the Verdict). `column`: where the layer metrics go ("accumulated"
    for a whole-model candidate's end-to-end hidden states). head_logits [R, V]: the candidate's head fed the
    reference's final norm (verify's "head"), where known."""
    from gptoss_convert.gate import check, judge

    started = time.time()
    check_names_and_shapes(goldens, outputs, source)
    outputs = at_checked_rows(goldens, outputs)
    t = thresholds.resolved()
    rows = goldens.rows
    config = goldens.manifest["checkpoint"]["config"]
    layers = [_compare_layer(goldens, outputs, i, config["layer_types"][i], rows, t, column)
              for i in range(goldens.num_layers)]
    head = {name: _measure(goldens, outputs, name, rows, t) for name in ("embedding", "final_norm")}
    kept = [rows[r] for r in goldens.inputs["logits.rows"].tolist()]
    head["head"] = None if head_logits is None else check(_flat(head_logits), _flat(goldens.expected["logits"]), kept, t)
    logits = _compare_logits(goldens, outputs, rows, t)
    verdict = judge(layers, logits, thresholds, window=config["sliding_window"], model_parts=head)
    report = _report(goldens, layers, head, logits, verdict, t, candidate)
    report["timing"] = {"seconds": round(time.time() - started, 3),
                        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                        "peak_gpu_bytes": None}
    return report, verdict


def _measure(goldens, outputs, name, rows, t):
    from gptoss_convert.gate import check

    if name not in outputs:
        return None
    return check(_flat(outputs[name]), _flat(goldens.expected[name]), rows, t)


def _flat(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(tensor.shape[0], -1).double()


def _compare_layer(goldens, outputs, i, attention_type, rows, t, column) -> _Layer:
    """rows: (prompt, position) of every row; the components are labelled with those of the checked rows."""
    from gptoss_convert.compare import router_agreement

    metrics, missing = {}, []
    checked = [rows[r] for r in goldens.checked]
    for component in LAYER_OUTPUTS:
        name = layer_name(i, component)
        if name not in outputs:
            missing.append(component)
        elif component == "expert_weights":
            metrics[component] = _measure_weights(goldens, outputs, i, checked, t)
        elif component != "expert_indices":  # the selected experts are judged through the router agreement
            metrics[component] = _measure(goldens, outputs, name, checked if is_checked(name) else rows, t)
    profile = _profile(goldens, outputs, i, t)
    router = None
    indices = outputs.get(layer_name(i, "expert_indices"))
    if indices is not None:
        ref_logits = goldens.expected[layer_name(i, "router_logits")].float()
        dtype = torch.float32 if goldens.manifest["dtype"] == "float32" else torch.bfloat16
        ref_indices = goldens.expected[layer_name(i, "expert_indices")].long()
        router = router_agreement(indices.long(), ref_indices, ref_logits, dtype, checked)
    return _Layer(i, attention_type, column, metrics, router, missing, profile)


def _profile(goldens, outputs, i, t) -> list:
    """Per prompt, per position: the largest tolerance ratio over the layer's provided float components (the
    report's layer x position heat-map)."""
    from gptoss_convert.gate import row_ratios

    names = [name for name in (layer_name(i, c) for c in LAYER_OUTPUTS if c != "expert_indices") if name in outputs]
    if not names:
        return []
    prompt, checked = goldens.inputs["prompt"], goldens.inputs["components.rows"]
    worst = torch.zeros(len(prompt), dtype=torch.float64)  # rows not checked: the layer output's ratio only
    for name in names:
        ratios = row_ratios(_flat(outputs[name]), _flat(goldens.expected[name]), t.atol, t.rtol)
        at = checked if is_checked(name) else slice(None)
        worst[at] = torch.maximum(worst[at], ratios)
    return [worst[prompt == p].tolist() for p in range(len(goldens.manifest["prompts"]))]


def _measure_weights(goldens, outputs, i, rows, t):
    """Routing weights, compared expert by expert: both sides sorted by expert index (any order is allowed)."""
    from gptoss_convert.gate import check

    def by_expert(indices, weights):
        return weights.double().gather(-1, indices.long().argsort(dim=-1))

    ours = by_expert(outputs.get(layer_name(i, "expert_indices"), goldens.expected[layer_name(i, "expert_indices")]),
                     outputs[layer_name(i, "expert_weights")])
    ref = by_expert(goldens.expected[layer_name(i, "expert_indices")], goldens.expected[layer_name(i, "expert_weights")])
    return check(ours, ref, rows, t)


def _compare_logits(goldens, outputs, rows, t):
    from gptoss_convert.gate import check_logits

    if "logits" not in outputs:
        return None
    kept = [rows[r] for r in goldens.inputs["logits.rows"].tolist()]
    return check_logits(outputs["logits"].double(), goldens.expected["logits"].double(), kept, t)


def _report(goldens, layers, head, logits, verdict, t, candidate) -> dict:
    from gptoss_convert.verify import SCHEMA_VERSION, heatmap

    manifest = goldens.manifest
    return {
        "schema_version": SCHEMA_VERSION,  # verify's report schema: the same readers and renderers
        "passed": verdict.passed,
        "atol": t.atol, "rtol": t.rtol, "max_kl": t.max_kl, "min_top1": t.min_top1, "dtype": t.dtype,
        "device": manifest["device"],
        "checkpoint": {k: v for k, v in manifest["checkpoint"].items() if k != "model"},  # the report's keys
        "versions": {"gptoss_convert": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "candidate": candidate,
        "reference": {**{k: manifest["reference"][k] for k in ("name", "version", "source")}, "provides": {},
                      "settings": {"goldens": str(goldens.directory), "goldens_created": manifest.get("created"),
                                   "goldens_device": manifest["device"]}},
        "prompts": manifest["prompts"],
        "sliding_window": manifest["checkpoint"]["config"]["sliding_window"],
        "embedding": head["embedding"].to_dict() if head["embedding"] else None,
        "layers": [layer.to_dict() for layer in layers],
        "final_norm": head["final_norm"].to_dict() if head["final_norm"] else None,
        "head": head["head"].to_dict() if head["head"] else None,
        "logits": logits.to_dict() if logits else None,
        "logits_path": "the candidate's head on its final norm of the recorded final_norm.input",
        "heatmap": heatmap(layers, manifest["prompts"]),
        "verdict": verdict.to_dict(),
    }


# ---- the two ways in ----------------------------------------------------------------------------------------------


def _check_dtype(goldens: Goldens, thresholds) -> None:
    if goldens.manifest["dtype"] != thresholds.dtype:
        raise InputError(f"--dtype {thresholds.dtype}: the goldens in {goldens.directory} were recorded in "
                         f"{goldens.manifest['dtype']}; use --dtype {goldens.manifest['dtype']}")


def compare_files(goldens_dir, outputs_file, thresholds) -> tuple[dict, object]:
    """`compare`: outputs.safetensors written by any implementation, against goldens."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    goldens = load_goldens(goldens_dir)
    _check_dtype(goldens, thresholds)
    path = Path(outputs_file)
    if not path.is_file():
        raise InputError(f"--outputs {path}: no such file; expected a safetensors file (docs/goldens.md)")
    try:
        outputs = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(f"--outputs {path}: not a readable safetensors file ({error})") from None
    candidate = {"name": path.name, "version": "unknown", "source": str(path), "provides": {}}
    return compare_outputs(goldens, outputs, thresholds, candidate, f"--outputs {path}")


def verify_goldens(goldens_dir, model, candidate_spec, thresholds, device="auto", progress=True) -> tuple[dict, object]:
    """`verify --goldens`: run the candidate on the recorded inputs (no reference, no Transformers) and compare."""
    from gptoss_convert.candidates import load_candidate
    from gptoss_convert.columns import Implementation
    from gptoss_convert.goldens import open_session
    from gptoss_convert.goldens_files import check_checkpoint
    from gptoss_convert.goldens_run import run_adapter

    started = time.time()
    goldens = load_goldens(goldens_dir)
    _check_dtype(goldens, thresholds)
    model = model or goldens.manifest["checkpoint"]["model"]
    session, checkpoint, _ = open_session(model, thresholds.dtype, device, prompt_list=goldens.manifest["prompts"])
    check_checkpoint(goldens, {f["path"]: f["sha256"] for f in checkpoint["files"]}, checkpoint["config"])
    adapter, described = load_candidate(candidate_spec)
    implementation = Implementation("candidate", adapter, described, session.dtype)
    _, outputs = run_adapter(implementation, session, recorded=goldens.inputs, progress=progress)
    if "logits" in outputs:
        outputs["logits"] = outputs["logits"][goldens.inputs["logits.rows"]]
    column = "isolated" if implementation.has("build_layer") else "accumulated"
    candidate = dict(described.to_dict(), provides=implementation.capabilities())
    report, verdict = compare_outputs(goldens, outputs, thresholds, candidate, f"candidate {candidate_spec}", column,
                                      _head_on_recorded_norm(implementation, session, goldens))
    report["device"] = session.device
    report["timing"]["seconds"] = round(time.time() - started, 3)
    return report, verdict


def _head_on_recorded_norm(implementation, session, goldens):
    """The candidate's LM head fed the reference's final norm at the kept rows -> [R, V], or None without a head."""
    from gptoss_convert.goldens_run import HEAD

    if not implementation.has("head"):
        return None
    normed = goldens.expected["final_norm"][goldens.inputs["logits.rows"]]
    x = normed[None].to(device=session.device, dtype=session.dtype)
    with torch.no_grad():
        logits = implementation.model_part("head", {HEAD: session.global_tensor(HEAD)}, x, x.shape[1])
    return logits[0].cpu()
