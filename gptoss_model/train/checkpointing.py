"""Per-layer activation checkpointing, attached from outside: each decoder layer keeps only its input during the
forward pass and recomputes its activations in the backward pass (`torch.utils.checkpoint`, non-reentrant).
Memory for activations drops from all layers' to one layer's, for about one extra forward pass of compute.
Calls with a KV cache (generation) and calls without gradients run the layer as usual."""

import torch
from torch.utils.checkpoint import checkpoint


def enable_activation_checkpointing(model):
    for layer in model.model.layers:

        def forward(x, position_embeddings, keep, layer_cache=None, _layer=layer):
            plain = type(_layer).forward.__get__(_layer)  # looked up per call: the fast path may re-class the layer
            if layer_cache is not None or not torch.is_grad_enabled():
                return plain(x, position_embeddings, keep, layer_cache)
            return checkpoint(plain, x, position_embeddings, keep, use_reentrant=False)

        layer.forward = forward  # an instance attribute: the class, and other models, stay untouched
    return model


def disable_activation_checkpointing(model):
    for layer in model.model.layers:
        layer.__dict__.pop("forward", None)
    return model
