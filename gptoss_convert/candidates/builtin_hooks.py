"""Reading the components of a decoder layer whose modules sit at Transformers' attribute paths (`self_attn`,
`mlp.router`, `mlp`): gptoss_model's layer and Transformers' own both do (docs/design.md), so one set of forward
hooks serves both, and neither forward is edited. The router of both returns (logits, top-k weights, indices)."""

from contextlib import contextmanager


@contextmanager
def recorded_components(layer, batch_shape):
    """Yields a dict filled, during one forward of `layer`, with the protocol's components (LAYER_COMPONENTS) that
    the hooks see, reshaped to [B, T, ...]; layer_output is the caller's."""
    seen = {}

    def first(output):
        return output[0] if isinstance(output, tuple) else output

    def as_tokens(t):  # [N, X] -> [B, T, X]
        return t.reshape(*batch_shape, t.shape[-1])

    def on_attention(module, args, output):
        seen["attention"] = first(output)

    def on_router(module, args, output):
        logits, weights, indices = output
        seen["router_logits"], seen["expert_weights"] = as_tokens(logits), as_tokens(weights)
        seen["expert_indices"] = as_tokens(indices)

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
        for handle in handles:
            handle.remove()
