"""`openai`: OpenAI's own reference implementation, `gpt_oss.torch` from the `gpt-oss` package on PyPI, as a
candidate or as the reference (`--candidate openai`, `--reference openai`; docs/candidates.md).

Nothing of it is copied here and nothing of it is patched: this adapter builds OpenAI's own modules
(`gpt_oss/torch/model.py`: `TransformerBlock` = `AttentionBlock` + `MLPBlock`, and the embedding, final norm and
unembedding of `Transformer`) and hands them the layer's tensors under OpenAI's names. What OpenAI's loader
(`gpt_oss/torch/weights.py`, `Transformer.from_checkpoint`) does from files is done here from tensors:

- q, k and v are one fused `qkv` projection (rows: all query heads, then the key heads, then the value heads);
- the experts are `mlp1_weight` [E, 2I, H] (gate and up interleaved rows, as in the checkpoint) and `mlp2_weight`
  [E, H, I]: output-major, like gptoss_model and unlike Transformers' [E, in, out];
- parameters are declared bfloat16 (norm scales float32) and filled with `copy_` there; in float32 mode every
  parameter is assigned in float32 instead, so no weight is rounded through bf16 on the way in.

What OpenAI's code fixes rather than reads, and so what this candidate cannot express (a checkpoint that needs any
other value is refused at setup, which verify reports in one line, exit 2): the window on even layers only, YaRN
without `truncate`, SwiGLU's alpha 1.702, RMSNorm's eps 1e-5, biases on every attention projection. Its rotary
embedding always covers positions 0..T-1 of one sequence and it keeps no KV cache, so it runs each batch row on its
own, refuses other positions, and has no cached-decoding column. It runs on the CPU in float32 as it is: its sdpa,
rotary embedding and swiglu take the dtype and device of their inputs.

Components: the attention output is the `attn.out` projection's output and the router logits the `mlp.gate`
output (forward hooks); the MoE output is `MLPBlock`'s output minus its input (the block adds its own residual);
the selected experts and their weights are recomputed from the captured router logits by the two calls
`MLPBlock.forward` makes (`torch.topk(..., sorted=True)`, then a softmax over the k values), because the block
does not return them. The adapter calls `attn` then `mlp` itself (TransformerBlock.forward's two steps) so
that the MLP, which gathers each token's expert matrices, gets the tokens a bounded chunk at a time.
"""

import importlib
from importlib import metadata

import torch


NAME = "openai"
PACKAGE = "gpt-oss"
INSTALL = "pip install --no-deps --ignore-requires-python gpt-oss==0.0.9"
_SWIGLU_ALPHA = 1.702  # gpt_oss.torch.model.swiglu's default; MLPBlock never passes another
_RMS_NORM_EPS = 1e-5  # gpt_oss.torch.model.RMSNorm's default; the blocks never pass another
MLP_GATHER_BYTES = 4 * 1024**3  # at most this much of gathered expert weights per MLPBlock call


def openai_model_module():
    """`gpt_oss.torch.model`, imported on first use (an ImportError naming the install command when it is missing;
    verify reports it in one line, exit 2)."""
    try:
        return importlib.import_module("gpt_oss.torch.model")
    except ImportError as error:
        raise ImportError(f"cannot import gpt_oss.torch ({error}); install it with: {INSTALL}") from None


def package_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "not installed"


def unsupported(config) -> list[str]:
    """What in `config` (a GPTOssConfig) OpenAI's gpt_oss.torch hard-codes differently."""
    problems = []
    alternating = tuple("sliding_attention" if i % 2 == 0 else "full_attention" for i in range(len(config.layer_types)))
    if tuple(config.layer_types) != alternating:
        problems.append("layer_types other than sliding on even layers, full on odd ones")
    if config.rope_truncate:
        problems.append("YaRN with truncate: true")
    if config.swiglu_alpha != _SWIGLU_ALPHA:
        problems.append(f"swiglu_alpha {config.swiglu_alpha} (it uses {_SWIGLU_ALPHA})")
    if config.rms_norm_eps != _RMS_NORM_EPS:
        problems.append(f"rms_norm_eps {config.rms_norm_eps} (it uses {_RMS_NORM_EPS})")
    if not config.attention_bias:
        problems.append("attention without biases")
    return problems


def model_config(config):
    """OpenAI's ModelConfig (the 16 keys of the original/ config.json) for a GPTOssConfig."""
    problems = unsupported(config)
    if problems:
        raise ValueError(f"gpt_oss.torch cannot express this checkpoint: {'; '.join(problems)}")
    return openai_model_module().ModelConfig(
        num_hidden_layers=config.num_hidden_layers,
        num_experts=config.num_local_experts,
        experts_per_token=config.num_experts_per_tok,
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        swiglu_limit=config.swiglu_limit,
        head_dim=config.head_dim,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        sliding_window=config.sliding_window,
        initial_context_length=config.rope_original_max_position_embeddings,
        rope_theta=config.rope_theta,
        rope_scaling_factor=config.rope_scaling_factor,
        rope_ntk_alpha=config.rope_beta_slow,
        rope_ntk_beta=config.rope_beta_fast,
    )


def block_state(index: int, tensors: dict) -> dict:
    """Layer `index`'s tensors as verify hands them over (`model.layers.N.*` names, experts [E, out, in]) -> OpenAI's
    TransformerBlock names. Its experts are output-major too, so no transpose."""
    prefix = f"model.layers.{index}."
    tensors = {name.removeprefix(prefix): tensor for name, tensor in tensors.items()}
    qkv = [f"self_attn.{p}_proj" for p in "qkv"]
    return {
        "attn.norm.scale": tensors["input_layernorm.weight"],
        "attn.sinks": tensors["self_attn.sinks"],
        "attn.qkv.weight": torch.cat([tensors[f"{p}.weight"] for p in qkv]),
        "attn.qkv.bias": torch.cat([tensors[f"{p}.bias"] for p in qkv]),
        "attn.out.weight": tensors["self_attn.o_proj.weight"],
        "attn.out.bias": tensors["self_attn.o_proj.bias"],
        "mlp.norm.scale": tensors["post_attention_layernorm.weight"],
        "mlp.gate.weight": tensors["mlp.router.weight"],
        "mlp.gate.bias": tensors["mlp.router.bias"],
        "mlp.mlp1_weight": tensors["mlp.experts.gate_up_proj"],
        "mlp.mlp1_bias": tensors["mlp.experts.gate_up_proj_bias"],
        "mlp.mlp2_weight": tensors["mlp.experts.down_proj"],
        "mlp.mlp2_bias": tensors["mlp.experts.down_proj_bias"],
    }


def fill(module: torch.nn.Module, state: dict, dtype: torch.dtype, strict: bool = True) -> torch.nn.Module:
    """Give `module` the tensors of `state`: in float32 every parameter becomes float32; in another dtype each takes
    the dtype OpenAI declared for it (bf16, norm scales float32), as `param.data.copy_` in its loader would."""
    declared = dict(module.named_parameters())
    cast = {name: t.to(torch.float32 if dtype == torch.float32 else declared[name].dtype) for name, t in state.items()}
    module.load_state_dict(cast, strict=strict, assign=True)
    return module.eval()


class OpenAILayer:
    """One TransformerBlock behind the adapter protocol's layer interface."""

    def __init__(self, block):
        self.block = block

    def run(self, hidden: torch.Tensor, position_ids: torch.Tensor, cache=None) -> dict:
        """hidden [B, T, H], position_ids [B, T] (each row 0..T-1) -> every component, [B, T, ...]."""
        if cache is not None:
            raise ValueError("gpt_oss.torch keeps no KV cache")
        expected = torch.arange(hidden.shape[1], device=position_ids.device).expand_as(position_ids)
        if not torch.equal(position_ids, expected):
            raise ValueError("gpt_oss.torch rotates positions 0..T-1 only")
        rows = [self._run_row(x) for x in hidden]  # OpenAI's blocks take one sequence [T, H]
        return {name: torch.stack([row[name] for row in rows]) for name in rows[0]}

    def _run_row(self, x: torch.Tensor) -> dict:
        """TransformerBlock.forward is `mlp(attn(x))`; the two calls are made here so that the MLP, which gathers
        every token's expert matrices ([T, K, 2I, H]: 0.4 GB a token on the 20b shape in float32), gets the tokens
        a chunk at a time. Tokens do not interact in MLPBlock: the math per token is the same (einsum's summation order
        may differ with the chunk size, by a few ulps; one chunk, the usual case, is bit for bit the block's forward)."""
        seen = {}
        after_attention, seen["attention"] = _call_capturing(self.block.attn, x, self.block.attn.out)
        parts = [self._run_mlp(part) for part in after_attention.split(self._tokens_per_chunk())]
        seen.update({name: torch.cat([part[name] for part in parts]) for name in parts[0]})
        top = torch.topk(seen["router_logits"], k=self.block.mlp.experts_per_token, dim=-1, sorted=True)
        seen["expert_indices"] = top.indices
        seen["expert_weights"] = torch.softmax(top.values, dim=1)
        return seen

    def _run_mlp(self, x: torch.Tensor) -> dict:
        output, router_logits = _call_capturing(self.block.mlp, x, self.block.mlp.gate)
        return {"router_logits": router_logits, "moe": output - x, "layer_output": output}

    def _tokens_per_chunk(self) -> int:
        mlp = self.block.mlp
        per_token = mlp.experts_per_token * (mlp.mlp1_weight[0].numel() + mlp.mlp2_weight[0].numel())
        return max(1, MLP_GATHER_BYTES // (per_token * mlp.mlp1_weight.element_size()))


class OpenAITorch:
    """The `openai` built-in: see the module docstring."""

    name = NAME

    def __init__(self):
        self.source = openai_model_module().__file__  # imported here, when `openai` is asked for, not before
        self.version = f"{PACKAGE} {package_version()}"
        self.dtype, self.device, self._config = torch.float32, "cpu", None

    def setup(self, context) -> None:
        self.dtype, self.device = context.dtype, context.device
        self._config = model_config(context.config)

    def build_layer(self, index: int, config, tensors: dict) -> OpenAILayer:
        modeling = openai_model_module()
        openai_config = self._config or model_config(config)
        block = modeling.TransformerBlock(openai_config, index, device=torch.device(self.device))
        return OpenAILayer(fill(block, block_state(index, tensors), self.dtype))

    def _outer(self, name: str, tensor: torch.Tensor):
        """OpenAI's `Transformer` without blocks (built on the meta device), with just `name` filled in."""
        modeling = openai_model_module()
        config = modeling.ModelConfig(num_hidden_layers=0, vocab_size=self._vocab(tensor), hidden_size=tensor.shape[-1])
        model = modeling.Transformer(config, device=torch.device("meta"))
        return fill(model, {name: tensor}, self.dtype, strict=False)

    def _vocab(self, tensor) -> int:
        return tensor.shape[0] if tensor.dim() == 2 else 1

    def embed(self, tensors: dict, token_ids: torch.Tensor) -> torch.Tensor:
        return self._outer("embedding.weight", tensors["model.embed_tokens.weight"]).embedding(token_ids)

    def final_norm(self, tensors: dict, hidden: torch.Tensor) -> torch.Tensor:
        return self._outer("norm.scale", tensors["model.norm.weight"]).norm(hidden)

    def head(self, tensors: dict, hidden: torch.Tensor) -> torch.Tensor:
        return self._outer("unembedding.weight", tensors["lm_head.weight"]).unembedding(hidden)


def candidate() -> OpenAITorch:
    """`--candidate openai`."""
    return OpenAITorch()


def reference() -> OpenAITorch:
    """`--reference openai`: the same adapter; it provides every component, as a reference must."""
    return OpenAITorch()


def _call_capturing(module, x, inner):
    """module(x), and the output of its submodule `inner` during that call (a forward hook: nothing is patched)."""
    seen = []
    hook = inner.register_forward_hook(lambda _module, _args, out: seen.append(out))
    try:
        output = module(x)
    finally:
        hook.remove()
    return output, seen[-1]
