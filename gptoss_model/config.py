"""GPTOssConfig: one typed dataclass for every gpt-oss shape, plus presets and the Transformers config.json bridge.

Field names follow Transformers' `GptOssConfig` (and so the hub's config.json) so values map across one to one.
Values for the presets: the hub's config.json of openai/gpt-oss-20b and -120b (docs/checkpoints.md, "Configs").
"""

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

SLIDING = "sliding_attention"
FULL = "full_attention"
IMPLEMENTATIONS = ("eager", "fast")


def alternating_layer_types(num_layers: int) -> tuple[str, ...]:
    # gpt-oss: even layers (0, 2, 4, ...) use the sliding window, odd layers attend to everything (Transformers: GptOssConfig.layer_types).
    return tuple(SLIDING if i % 2 == 0 else FULL for i in range(num_layers))


@dataclass(frozen=True)
class GPTOssConfig:
    vocab_size: int = 201088
    hidden_size: int = 2880
    intermediate_size: int = 2880  # per expert
    num_hidden_layers: int = 24
    num_attention_heads: int = 64
    num_key_value_heads: int = 8
    head_dim: int = 64
    num_local_experts: int = 32
    num_experts_per_tok: int = 4
    sliding_window: int = 128  # keys visible on sliding layers, the current token included
    layer_types: tuple[str, ...] = ()  # empty: alternating, starting with a sliding layer
    max_position_embeddings: int = 131072
    rope_theta: float = 150000.0
    rope_scaling_factor: float = 32.0  # YaRN s
    rope_beta_fast: float = 32.0
    rope_beta_slow: float = 1.0
    rope_original_max_position_embeddings: int = 4096
    rope_truncate: bool = False  # gpt-oss: the YaRN correction range is NOT rounded to integers
    rms_norm_eps: float = 1e-5
    swiglu_alpha: float = 1.702
    swiglu_limit: float = 7.0
    attention_bias: bool = True
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    router_aux_loss_coef: float = 0.9
    bos_token_id: int | None = 199998
    eos_token_id: int | list[int] | None = 200002
    pad_token_id: int | None = 199999
    implementation: str = "eager"  # "eager": the readable path; "fast": fused attention + grouped experts
    extra: dict = field(default_factory=dict, compare=False)  # config.json keys we carry but do not use

    def __post_init__(self):
        if not self.layer_types:
            object.__setattr__(self, "layer_types", alternating_layer_types(self.num_hidden_layers))
        object.__setattr__(self, "layer_types", tuple(self.layer_types))
        problems = []
        if len(self.layer_types) != self.num_hidden_layers:
            problems.append(f"layer_types has {len(self.layer_types)} entries for {self.num_hidden_layers} layers")
        if any(t not in (SLIDING, FULL) for t in self.layer_types):
            problems.append(f"layer_types may hold only {SLIDING!r} or {FULL!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            problems.append("num_attention_heads must be a multiple of num_key_value_heads")
        if self.head_dim % 2:
            problems.append("head_dim must be even (rotary embedding)")
        if not 0 < self.num_experts_per_tok <= self.num_local_experts:
            problems.append("num_experts_per_tok must be in 1..num_local_experts")
        if self.implementation not in IMPLEMENTATIONS:
            problems.append(f"implementation must be one of {IMPLEMENTATIONS}, got {self.implementation!r}")
        if problems:
            raise ValueError("invalid GPTOssConfig: " + "; ".join(problems))

    @property
    def kv_group_size(self) -> int:
        """Query heads that share one key/value head."""
        return self.num_attention_heads // self.num_key_value_heads

    def replace(self, **changes) -> "GPTOssConfig":
        return dataclasses.replace(self, **changes)

    # ---- Transformers config.json ------------------------------------------------------------------------------

    @classmethod
    def from_hf_config(cls, source: "dict | str | Path") -> "GPTOssConfig":
        """Read a Transformers gpt-oss config (a dict, a config.json, or a directory holding one).

        Accepts both spellings of the rotary settings: 4.x `rope_scaling` + `rope_theta` and 5.x `rope_parameters`.
        """
        hf = _read_json(source)
        rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
        rope_type = rope.get("rope_type", rope.get("type", "yarn"))
        if rope_type != "yarn":
            raise ValueError(f"rope type {rope_type!r} is not supported: gpt-oss uses 'yarn'")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "implementation"}
        values = {k: hf[k] for k in known if k in hf}
        values.pop("layer_types", None)
        if hf.get("layer_types"):
            values["layer_types"] = tuple(hf["layer_types"])
        if "num_experts_per_tok" not in hf and "experts_per_token" in hf:
            values["num_experts_per_tok"] = hf["experts_per_token"]
        values["rope_theta"] = float(rope.get("rope_theta", hf.get("rope_theta", cls.rope_theta)))
        values["rope_scaling_factor"] = float(rope.get("factor", cls.rope_scaling_factor))
        values["rope_beta_fast"] = float(rope.get("beta_fast") or cls.rope_beta_fast)
        values["rope_beta_slow"] = float(rope.get("beta_slow") or cls.rope_beta_slow)
        # Transformers falls back to max_position_embeddings when this key is missing (docs/model.md pitfalls).
        values["rope_original_max_position_embeddings"] = int(
            rope.get("original_max_position_embeddings", hf.get("max_position_embeddings", 131072))
        )
        # Transformers treats a missing `truncate` as True (docs/model.md pitfalls: `truncate`).
        values["rope_truncate"] = bool(rope.get("truncate", True))
        used = known | {"rope_scaling", "rope_parameters", "experts_per_token"}
        values["extra"] = {k: v for k, v in hf.items() if k not in used}
        return cls(**values)

    def to_hf_config(self) -> dict:
        """The config.json Transformers reads, in the hub's own spelling (`rope_scaling` + `rope_theta`)."""
        hf = dict(self.extra)
        hf.update(
            architectures=["GptOssForCausalLM"],
            model_type="gpt_oss",
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            num_local_experts=self.num_local_experts,
            num_experts_per_tok=self.num_experts_per_tok,
            experts_per_token=self.num_experts_per_tok,
            sliding_window=self.sliding_window,
            layer_types=list(self.layer_types),
            max_position_embeddings=self.max_position_embeddings,
            initial_context_length=self.rope_original_max_position_embeddings,
            rope_theta=self.rope_theta,
            rope_scaling={
                "rope_type": "yarn",
                "factor": self.rope_scaling_factor,
                "beta_fast": self.rope_beta_fast,
                "beta_slow": self.rope_beta_slow,
                "original_max_position_embeddings": self.rope_original_max_position_embeddings,
                "truncate": self.rope_truncate,
            },
            rms_norm_eps=self.rms_norm_eps,
            swiglu_limit=self.swiglu_limit,
            attention_bias=self.attention_bias,
            attention_dropout=0.0,
            hidden_act="silu",
            tie_word_embeddings=self.tie_word_embeddings,
            initializer_range=self.initializer_range,
            router_aux_loss_coef=self.router_aux_loss_coef,
            output_router_logits=False,
            use_cache=True,
            bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
        )
        if self.swiglu_alpha != 1.702:
            hf["swiglu_alpha"] = self.swiglu_alpha
        return hf

    # ---- our own format ----------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["layer_types"] = list(self.layer_types)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GPTOssConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown GPTOssConfig keys: {', '.join(unknown)}")
        return cls(**d)

    # ---- YaRN (docs/model.md, YaRN rotary) ----------------------------------------------------------------------

    @property
    def rope_attention_factor(self) -> float:
        """YaRN's m ("concentration"): cos and sin are both multiplied by it."""
        s = self.rope_scaling_factor
        return 1.0 if s <= 1 else 0.1 * math.log(s) + 1.0


def _read_json(source) -> dict:
    if isinstance(source, dict):
        return dict(source)
    path = Path(source)
    if path.is_dir():
        path = path / "config.json"
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------------------------------
# OpenAI's original/config.json (docs/checkpoints.md, "Configs")

# OpenAI's `ModelConfig` fields (gpt_oss/torch/model.py): exactly these keys are in original/config.json.
ORIGINAL_CONFIG_KEYS = (
    "num_hidden_layers", "num_experts", "experts_per_token", "vocab_size", "hidden_size", "intermediate_size",
    "swiglu_limit", "head_dim", "num_attention_heads", "num_key_value_heads", "sliding_window",
    "initial_context_length", "rope_theta", "rope_scaling_factor", "rope_ntk_alpha", "rope_ntk_beta",
)
# Keys that size tensors: each must be a positive integer, or a later shape check would blame the weights.
ORIGINAL_SIZE_KEYS = ("num_hidden_layers", "num_experts", "experts_per_token", "vocab_size", "hidden_size",
                      "intermediate_size", "head_dim", "num_attention_heads", "num_key_value_heads", "sliding_window")
# o200k_harmony ids Transformers' conversion script puts into the HF config; kept only when they fit the vocabulary.
HARMONY_TOKEN_IDS = {"bos_token_id": 199998, "eos_token_id": 200002, "pad_token_id": 199999}


def check_positive_sizes(values: dict, keys, source) -> None:
    """ValueError naming `source` and the key when a present size key is not a positive integer."""
    for key in keys:
        value = values.get(key)
        if key in values and not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise ValueError(f"{source}: {key} must be a positive integer, found {value!r}")


def config_from_original(original: dict, source: str = "original/config.json") -> GPTOssConfig:
    """Map OpenAI's `original/config.json` onto GPTOssConfig as Transformers' conversion script
    (convert_gpt_oss_weights_to_hf.py) does: num_experts -> num_local_experts, rope_ntk_beta/alpha -> beta_fast/slow,
    truncate False, original max = initial_context_length, max_position_embeddings = factor x that.
    ValueError naming `source` for missing, unknown or unusable keys."""
    missing = [k for k in ORIGINAL_CONFIG_KEYS if k not in original]
    unknown = sorted(set(original) - set(ORIGINAL_CONFIG_KEYS))
    if missing or unknown:
        problems = [text for text in (missing and f"missing {', '.join(missing)}",
                                      unknown and f"unknown {', '.join(unknown)}") if text]
        raise ValueError(f"{source}: expected exactly the 16 OpenAI ModelConfig keys; " + "; ".join(problems))
    check_positive_sizes(original, ORIGINAL_SIZE_KEYS, source)
    o = original
    token_ids = {k: (v if v < o["vocab_size"] else None) for k, v in HARMONY_TOKEN_IDS.items()}
    try:
        return GPTOssConfig(
            vocab_size=o["vocab_size"],
            hidden_size=o["hidden_size"],
            intermediate_size=o["intermediate_size"],
            num_hidden_layers=o["num_hidden_layers"],
            num_attention_heads=o["num_attention_heads"],
            num_key_value_heads=o["num_key_value_heads"],
            head_dim=o["head_dim"],
            num_local_experts=o["num_experts"],
            num_experts_per_tok=o["experts_per_token"],
            sliding_window=o["sliding_window"],
            max_position_embeddings=int(o["initial_context_length"] * o["rope_scaling_factor"]),
            rope_theta=float(o["rope_theta"]),
            rope_scaling_factor=float(o["rope_scaling_factor"]),
            rope_beta_fast=float(o["rope_ntk_beta"]),
            rope_beta_slow=float(o["rope_ntk_alpha"]),
            rope_original_max_position_embeddings=int(o["initial_context_length"]),
            rope_truncate=False,
            swiglu_limit=float(o["swiglu_limit"]),
            extra={"initial_context_length": o["initial_context_length"]},
            **token_ids,
        )
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: {error}") from None


def original_config_dict(config: GPTOssConfig) -> dict:
    """The inverse of `config_from_original`: the 16-key original/config.json for a config."""
    return {
        "num_hidden_layers": config.num_hidden_layers,
        "num_experts": config.num_local_experts,
        "experts_per_token": config.num_experts_per_tok,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "swiglu_limit": config.swiglu_limit,
        "head_dim": config.head_dim,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "sliding_window": config.sliding_window,
        "initial_context_length": config.rope_original_max_position_embeddings,
        "rope_theta": config.rope_theta,
        "rope_scaling_factor": config.rope_scaling_factor,
        "rope_ntk_alpha": config.rope_beta_slow,
        "rope_ntk_beta": config.rope_beta_fast,
    }


# ---------------------------------------------------------------------------------------------------------------
# Presets

def GPTOss_20B(**overrides) -> GPTOssConfig:
    """openai/gpt-oss-20b: 24 layers, 32 experts, top-4."""
    return GPTOssConfig(**overrides)


def GPTOss_120B(**overrides) -> GPTOssConfig:
    """openai/gpt-oss-120b: 36 layers, 128 experts, top-4."""
    return GPTOssConfig(**{"num_hidden_layers": 36, "num_local_experts": 128, **overrides})


def GPTOss_Small(**overrides) -> GPTOssConfig:
    """Same structure as the real models (sinks, YaRN, alternating sliding/full, top-k MoE), laptop-sized."""
    small = dict(
        vocab_size=4096,
        hidden_size=256,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=32,
        num_local_experts=8,
        num_experts_per_tok=2,
        sliding_window=32,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    return GPTOssConfig(**{**small, **overrides})
