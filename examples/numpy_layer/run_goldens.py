"""The goldens protocol from the implementation's side (docs/goldens.md), with the NumPy layer of gptoss_numpy.py:

    python examples/numpy_layer/run_goldens.py --checkpoint CKPT --goldens GOLDENS --out outputs.safetensors
    gptoss-convert compare --goldens GOLDENS --outputs outputs.safetensors

Read the checkpoint and inputs.safetensors; run every layer on its recorded input, prompt by prompt; write each
component under the name expected.safetensors uses, at every row (`compare` narrows the components to the goldens'
checked rows, components.rows; writing only those rows is accepted too). Needs only numpy and safetensors.
"""

import argparse
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from gptoss_numpy import Checkpoint, decoder_layer, layer_weights, rms_norm


def prompt_spans(prompt: np.ndarray) -> list[tuple[int, int]]:
    """Rows of each prompt (contiguous in the goldens)."""
    return [(int(np.argmax(prompt == p)), int(np.argmax(prompt == p)) + int((prompt == p).sum()))
            for p in range(int(prompt.max()) + 1)]


def run(checkpoint: Checkpoint, inputs: dict) -> dict:
    config, spans, positions = checkpoint.config, prompt_spans(inputs["prompt"]), inputs["positions"]
    outputs = {"embedding": checkpoint["model.embed_tokens.weight"][inputs["token_ids"]]}
    for i, layer_type in enumerate(config["layer_types"]):
        w = layer_weights(checkpoint, i)
        x = inputs[f"layers.{i}.input"]
        per_prompt = [decoder_layer(x[a:b], w, config, layer_type, positions[a:b]) for a, b in spans]
        for name in per_prompt[0]:
            outputs[f"layers.{i}.{name}"] = np.concatenate([got[name] for got in per_prompt])
    normed = rms_norm(inputs["final_norm.input"], checkpoint["model.norm.weight"], config["rms_norm_eps"])
    outputs["final_norm"] = normed
    outputs["logits"] = normed[inputs["logits.rows"]] @ checkpoint["lm_head.weight"].T
    return {name: np.ascontiguousarray(v, dtype=np.int64 if v.dtype.kind in "iu" else np.float32)
            for name, v in outputs.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, type=Path, help="HF-layout checkpoint directory")
    parser.add_argument("--goldens", required=True, type=Path, help="directory written by `gptoss-convert goldens`")
    parser.add_argument("--out", required=True, type=Path, help="outputs.safetensors to write")
    args = parser.parse_args()
    if json.loads((args.goldens / "manifest.json").read_text())["dtype"] != "float32":
        parser.error("this example computes in float32; record the goldens with --dtype float32")
    outputs = run(Checkpoint(args.checkpoint), load_file(str(args.goldens / "inputs.safetensors")))
    save_file(outputs, str(args.out))
    print(f"wrote {args.out}: {len(outputs)} tensors")


if __name__ == "__main__":
    main()
