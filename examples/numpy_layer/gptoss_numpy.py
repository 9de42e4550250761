"""A gpt-oss decoder layer in NumPy only (no torch), written from the model's description (docs/model.md of
gptoss-convert): what a port to another framework or language has to get right, in one readable file.

Float32 throughout. Shapes: T tokens of one prompt, H hidden, nq / nkv heads, d head dim, E experts, K chosen
experts, I expert width.
"""

import json
import math
import struct
from pathlib import Path

import numpy as np

# ---- reading the checkpoint ----------------------------------------------------------------------------------------
# safetensors.numpy cannot return BF16 (NumPy has no bfloat16), so tensors are read from the file format directly:
# an 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, then raw bytes.

_NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16, "U8": np.uint8, "I64": np.int64}


def read_tensor(path: Path, name: str) -> np.ndarray:
    with open(path, "rb") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
        entry = json.loads(f.read(header_len))[name]
        begin, end = entry["data_offsets"]
        f.seek(8 + header_len + begin)
        raw = f.read(end - begin)
    if entry["dtype"] == "BF16":  # a bfloat16 is the upper half of a float32
        values = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        values = np.frombuffer(raw, dtype=np.dtype(_NUMPY_DTYPES[entry["dtype"]]).newbyteorder("<"))
    return values.astype(np.float32 if values.dtype.kind == "f" else values.dtype).reshape(entry["shape"])


class Checkpoint:
    """An HF-layout gpt-oss checkpoint: config.json plus one or more safetensors files (with an index)."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.config = json.loads((self.directory / "config.json").read_text())
        index = self.directory / "model.safetensors.index.json"
        if index.is_file():
            self.where = {k: self.directory / v for k, v in json.loads(index.read_text())["weight_map"].items()}
        else:
            self.where = {}
            for path in self.directory.glob("*.safetensors"):
                with open(path, "rb") as f:
                    header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
                self.where.update({k: path for k in header if k != "__metadata__"})

    def __getitem__(self, name: str) -> np.ndarray:
        return read_tensor(self.where[name], name)

    def experts(self, layer: int, which: str) -> np.ndarray:
        """An expert matrix [E, out, in], from MXFP4 blocks/scales (or plain, if the checkpoint is dequantized)."""
        prefix = f"model.layers.{layer}.mlp.experts.{which}"
        if prefix in self.where:
            return self[prefix]
        return dequantize_mxfp4(self[prefix + "_blocks"], self[prefix + "_scales"])


# FP4 E2M1: bit 3 is the sign, codes 0..7 are 0, 0.5, 1, 1.5, 2, 3, 4, 6
FP4_VALUES = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=np.float32)


def dequantize_mxfp4(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """blocks [E, out, in/32, 16] uint8 (two FP4 codes a byte, the even element in the low nibble), scales
    [E, out, in/32] uint8 (a power of two, biased by 127) -> [E, out, in] float32. Exact."""
    low, high = FP4_VALUES[blocks & 0x0F], FP4_VALUES[blocks >> 4]
    values = np.stack([low, high], axis=-1).reshape(*blocks.shape[:-1], 32)  # element 2j, 2j+1 side by side
    values = np.ldexp(values, scales.astype(np.int32)[..., None] - 127)
    return values.reshape(*blocks.shape[:-2], -1)


# ---- the layer --------------------------------------------------------------------------------------------------


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return weight * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def yarn_rotary(config: dict, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [T, d/2] for YaRN: long-wavelength pairs interpolated by the factor, short ones kept, a linear ramp
    in between; both multiplied by the attention factor 0.1·ln(factor) + 1."""
    rope = config.get("rope_scaling") or config.get("rope_parameters")
    d, base, factor = config["head_dim"], config["rope_theta"], rope["factor"]
    original = rope["original_max_position_embeddings"]
    freqs = base ** (np.arange(0, d, 2, dtype=np.float32) / d)

    def pair_for(rotations):  # the pair index whose wavelength turns `rotations` times over the original context
        return d * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = pair_for(rope["beta_fast"]), pair_for(rope["beta_slow"])
    if rope.get("truncate", True):  # gpt-oss sets truncate false: the ramp ends stay fractional
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, d - 1)
    ramp = np.clip((np.arange(d // 2, dtype=np.float32) - low) / max(high - low, 1e-3), 0, 1)
    inv_freq = (1 / (factor * freqs)) * ramp + (1 / freqs) * (1 - ramp)
    angles = positions[:, None].astype(np.float32) * inv_freq[None, :].astype(np.float32)
    scale = 0.1 * math.log(factor) + 1 if factor > 1 else 1.0
    return np.cos(angles) * scale, np.sin(angles) * scale


def rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x [heads, T, d]: rotate the first and second halves of each head as pairs."""
    a, b = np.split(x, 2, axis=-1)
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def attention(x, w, config, layer_type, positions):
    """x [T, H] (already normalised) -> [T, H]. Grouped-query attention with a learned sink logit per head that
    joins the softmax without a value; sliding layers see the last `sliding_window` keys, the query included."""
    T, nq, nkv, d = x.shape[0], config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
    q = (x @ w["q_proj.weight"].T + w["q_proj.bias"]).reshape(T, nq, d).transpose(1, 0, 2)
    k = (x @ w["k_proj.weight"].T + w["k_proj.bias"]).reshape(T, nkv, d).transpose(1, 0, 2)
    v = (x @ w["v_proj.weight"].T + w["v_proj.bias"]).reshape(T, nkv, d).transpose(1, 0, 2)
    cos, sin = yarn_rotary(config, positions)
    q, k = rotate(q, cos, sin), rotate(k, cos, sin)
    k, v = np.repeat(k, nq // nkv, axis=0), np.repeat(v, nq // nkv, axis=0)  # head h reads kv head h // group
    scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)  # [nq, T, T]
    distance = positions[:, None] - positions[None, :]
    allowed = distance >= 0
    if layer_type == "sliding_attention":
        allowed &= distance < config["sliding_window"]
    scores = np.where(allowed[None], scores, -np.inf)
    sinks = np.broadcast_to(w["sinks"][:, None, None], (nq, T, 1))
    logits = np.concatenate([scores, sinks], axis=-1)
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs = (probs / probs.sum(axis=-1, keepdims=True))[..., :-1]  # the sink's share is dropped
    out = (probs @ v).transpose(1, 0, 2).reshape(T, nq * d)
    return out @ w["o_proj.weight"].T + w["o_proj.bias"]


def route(x, w, k):
    """x [T, H] -> router logits [T, E], the top-k experts [T, K] and their weights (softmax over those k)."""
    logits = x @ w["router.weight"].T + w["router.bias"]
    chosen = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
    top = np.take_along_axis(logits, chosen, axis=-1)
    weights = np.exp(top - top.max(axis=-1, keepdims=True))
    return logits, chosen, weights / weights.sum(axis=-1, keepdims=True)


def experts(x, chosen, weights, w, config):
    """Σ_k weight_k · expert_k(x). Each expert: gate and up are interleaved rows of one matrix; the gate is
    clamped from above only, up on both sides; SwiGLU with alpha inside the sigmoid, and (up + 1)."""
    limit, alpha = config.get("swiglu_limit", 7.0), 1.702
    out = np.zeros_like(x)
    for e in np.unique(chosen):
        token, slot = np.nonzero(chosen == e)
        h = x[token] @ w["gate_up_proj"][e].T + w["gate_up_proj_bias"][e]
        gate, up = np.minimum(h[:, 0::2], limit), np.clip(h[:, 1::2], -limit, limit)
        glu = gate / (1 + np.exp(-alpha * gate))
        y = ((up + 1) * glu) @ w["down_proj"][e].T + w["down_proj_bias"][e]
        np.add.at(out, token, y * weights[token, slot][:, None])
    return out


def layer_weights(checkpoint: Checkpoint, i: int) -> dict:
    """Layer i's tensors, named by what follows `self_attn.`, `mlp.experts.` or `mlp.` (e.g. "q_proj.weight",
    "router.bias", "down_proj"), experts dequantized to [E, out, in]."""
    prefix, w = f"model.layers.{i}.", {}
    for name in checkpoint.where:
        if name.startswith(prefix) and not name.endswith(("_blocks", "_scales")):
            short = name[len(prefix):]
            for part in ("self_attn.", "mlp.experts.", "mlp."):
                short = short.removeprefix(part)
            w[short] = checkpoint[name]
    for which in ("gate_up_proj", "down_proj"):
        w.setdefault(which, checkpoint.experts(i, which))
    return w


def decoder_layer(x, w, config, layer_type, positions) -> dict:
    """x [T, H] of one prompt -> every component the goldens protocol names."""
    eps, k = config["rms_norm_eps"], config["num_experts_per_tok"]
    attn = attention(rms_norm(x, w["input_layernorm.weight"], eps), w, config, layer_type, positions)
    h = x + attn
    normed = rms_norm(h, w["post_attention_layernorm.weight"], eps)
    logits, chosen, weights = route(normed, w, k)
    moe = experts(normed, chosen, weights, w, config)
    return {"attention": attn, "router_logits": logits, "expert_indices": chosen, "expert_weights": weights,
            "moe": moe, "layer_output": h + moe}
