"""One decoding step's attention alone, 20b shape (64 query heads, 8 kv heads, d = 64, bf16) over a static KV
buffer on CUDA: kernels/one_token_attention.py's launch against Inductor's kernels for fast.one_token_attention (what
the compiled step ran before the kernel), each timed through a CUDA graph (triton.testing.do_bench_cudagraph), for
batch 1 and 8, buffers of 1024 to 16384 keys with the new token in the middle, a full layer's causal mask and a
sliding layer's window of 128. Also each case's largest difference between the two, relative to the head's output.

    PYTHONPATH=. python3 scripts/bench_attention_kernel.py --json attention.json
"""

import argparse
import json
import sys

import torch

sys.path.insert(0, ".")
from gptoss_model import GPTOss_20B  # noqa: E402
from gptoss_model.io import atomic_write_text  # noqa: E402

CASES = [(batch, keys, layer) for batch in (1, 8) for keys in (1024, 4096, 16384) for layer in ("full", "sliding")]


def keep_mask(batch: int, keys: int, layer: str, window: int, device="cpu"):
    """keep [batch, 1, 1, keys] of the token at slot keys // 2: every key up to it, or the last `window` of those."""
    slot, slots = keys // 2, torch.arange(keys, device=device)
    kept = slots <= slot
    if layer == "sliding":
        kept &= slots > slot - window
    return kept.view(1, 1, 1, keys).expand(batch, 1, 1, keys).contiguous()


def case(batch, keys, layer, config):
    import triton.testing

    from gptoss_model import fast
    from gptoss_model.kernels.one_token_attention import one_token_attention

    nq, nkv, d = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    generator = torch.Generator("cuda").manual_seed(keys + batch)
    q = torch.randn(batch, nq, 1, d, device="cuda", generator=generator).to(torch.bfloat16)
    k, v = (torch.randn(batch, nkv, keys, d, device="cuda", generator=generator).to(torch.bfloat16) for _ in "kv")
    sinks = torch.randn(nq, device="cuda", generator=generator).to(torch.bfloat16)
    keep = keep_mask(batch, keys, layer, config.sliding_window, "cuda")
    inductor = torch.compile(fast.one_token_attention, dynamic=False)
    with torch.no_grad():
        runs = {"kernel": lambda: one_token_attention(q, k, v, sinks, keep, d**-0.5),
                "inductor": lambda: inductor(q, k, v, sinks, keep, d**-0.5)}
        got, want = runs["kernel"]().float(), runs["inductor"]().float()
        us = {name: 1000 * triton.testing.do_bench_cudagraph(run, rep=100) for name, run in runs.items()}
    scale = want.abs().amax(-1, keepdim=True).clamp_min(1e-30)
    return {"batch": batch, "keys": keys, "layer": layer, "kernel_us": round(us["kernel"], 2),
            "inductor_us": round(us["inductor"], 2), "speedup": round(us["inductor"] / us["kernel"], 2),
            "max_difference_per_head": ((got - want).abs() / scale).max().item()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write the rows here (whole, then renamed, after every case)")
    args = parser.parse_args()
    config, rows = GPTOss_20B(), []
    for batch, keys, layer in CASES:
        rows.append(case(batch, keys, layer, config))
        print(json.dumps(rows[-1]), flush=True)
        if args.json:  # after every case: a run cut short by a time limit keeps what it measured
            atomic_write_text(args.json, json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
