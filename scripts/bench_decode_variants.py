"""Decode-step variants that only a GPU can judge, each timed in its own process with bench_gpu.py's measurement
(20b shape, bf16, packed experts, CUDA-graph decoder): prefill 2048 and greedy decoding at batch 1 and 8.

    PYTHONPATH=. python3 scripts/bench_decode_variants.py --json variants.json            # all of VARIANTS
    PYTHONPATH=. python3 scripts/bench_decode_variants.py --variants base inductor-tuned

A variant is a change applied from here before the model is built, so the tree's fast path stays as it is until a
variant wins on the GPU:
- base: the tree as it is;
- inductor-tuned: Inductor's coordinate-descent tuning of its generated kernels' block sizes (what gpt-fast turns
  on); the decode step's projections and attention are Inductor reductions;
- linear-8-rows: fast.linear's single-row reduction also for up to 8 rows (fast.REDUCTION_ROWS = 8, batch-8
  decoding), instead of cuBLAS's split-K kernels and their reduce kernels (0.96 ms of a 7.4 ms batch-8 step,
  docs/benchmarks.md);
- qkv-inductor: batch-1 decoding's RMSNorm and q/k/v as Inductor's three reductions, as before the fourth
  session wired in gptoss_model/kernels/norm_linear.py's one launch (measured then as the variant
  "norm-qkv-kernel": 468.0 against 369.2 tok/s, docs/benchmarks.md);
- attention-inductor: one-token attention as Inductor's kernels (fast.one_token_attention), as before
  gptoss_model/kernels/one_token_attention.py's one launch was wired in (fast._one_token_attention);
- attention-matmul-8: one-token attention's two products as cuBLAS batched matmuls when several sequences decode
  together, instead of the fused reductions (0.62 ms of the batch-8 step); batch 1 keeps the reductions. Only with
  attention-inductor: the attention kernel has no products of its own to replace;
- o-proj-kernel: o_proj through kernels/norm_linear.py's launch without the norm (fast.NORM_LINEAR_O_PROJ), instead
  of Inductor's reduction (batch 1) or cuBLAS (batch 8);
- rows-kernel: norm_linear's 2-16-row kernel for batch 8's q/k/v (and o_proj, with o-proj-kernel)
  (fast.NORM_LINEAR_ROWS = 16), instead of cuBLAS's split-K kernels.
  The fifth session measured both wired in and lost (o-proj-kernel+rows-kernel against the tree without them: batch
  1 325.2 against 414.5 tok/s, batch 8 1,087.4 against 1,167.3), so the tree keeps them off;
- fragment-projections: decoding's q/k/v and o_proj (bf16, up to 8 rows) through norm_linear's tensor-core
  fragments kernel (fast.FRAGMENT_PROJECTIONS, norm_linear.FRAGMENTS) instead of norm_linear's float32 kernel
  (one row's q/k/v), Inductor's reduction (o_proj) and cuBLAS (batch 8). Measured slower in the sixth session;
- experts-4-warps: the fragments kernel's programs over sorted rows (batch 8) with 4 warps instead of 2
  (mxfp4_fragments.SORTED_WARPS), as before the seventh session measured 2 faster ("experts-2-warps" then:
  batch 8 1,498.5 against 1,474.3 and 1,509.5 against 1,499.2 tok/s);
- experts-one-wave: the fragments kernel without the prefetch and at most 40 registers (mxfp4_fragments.PREFETCH,
  MAX_REGISTERS; no spills offline): 12 programs an SM instead of 8, so that batch 1's gate/up launch (1,440
  programs) is one wave instead of 1.36;
- experts-row-2-warps, experts-row-8-warps: batch 1's fragments programs (row tiles) with 2 or 8 warps instead of 4
  (mxfp4_fragments.WARPS): 2 warps fit 16 programs an SM (the gate/up launch in one wave, 12 steps a warp), 8
  warps halve a warp's steps (3 at K = 2,880) but fit 4 programs an SM;
- experts-two-multiplies: the fragments kernel's decoded codes multiplied by 2^126 and then by the scale
  (mxfp4_fragments.ONE_MULTIPLY = False), as before the tenth session, instead of one multiply by their product;
- tiled-prefill: prefill's packed experts through mxfp4_moe's tensor-core tiles (mxfp4_dequantize.DEQUANTIZE_ROWS
  = None), as before the eighth session, instead of shares of dequantized bf16 weights and the grouped matmul;
- no-fragment-experts: the packed experts of up to 64 (token, expert) rows through mxfp4_moe's one-row and
  tensor-core tiles (mxfp4_moe.FRAGMENTS) instead of kernels/mxfp4_fragments.py;
- combo-kernels, aggressive-fusion: Inductor's switches of those names (horizontal fusion of independent kernels,
  e.g. the rotary of q and of k; fusing nodes that share no memory access): a batch-1 step is still ~15 small
  kernels a layer, each a few µs.
(The fifth session's first call measured "prefill-graph", the prefill captured as a CUDA graph per prompt shape:
34.7k against 29.2k tok/s; it is now gptoss_model.generate.GraphedForward, which bench_gpu.py uses.)
Parts combine with "+".
"""

import argparse
import importlib
import json
import os
import subprocess
import sys
import types

import torch

sys.path.insert(0, ".")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

ENVIRONMENT = {"inductor-tuned": {"TORCHINDUCTOR_COORDINATE_DESCENT_TUNING": "1"}}  # read when Inductor is imported
PARTS = ("base", "inductor-tuned", "linear-8-rows", "qkv-inductor", "attention-inductor", "attention-matmul-8",
         "o-proj-kernel", "rows-kernel", "combo-kernels", "aggressive-fusion", "fragment-projections",
         "no-fragment-experts", "experts-4-warps", "experts-one-wave", "experts-row-2-warps",
         "experts-row-8-warps", "experts-two-multiplies", "tiled-prefill")
# the default run (~2 min on the H200): the tenth session's comparison of the one-multiply decoding against the two
# multiplies; the others on request. (mxfp4_fragments' variants that measured slower or flat were removed with their parts here: see
# that module's comment for the commits that have them.)
VARIANTS = ("base", "experts-two-multiplies")
INDUCTOR_SWITCHES = {"combo-kernels": "combo_kernels", "aggressive-fusion": "aggressive_fusion"}


def unknown_parts(variant: str) -> list[str]:
    return [part for part in variant.split("+") if part not in PARTS]


FAST, FRAGMENTS = "gptoss_model.fast", "gptoss_model.kernels.mxfp4_fragments"
SETTINGS = {  # part -> the (module, attribute, value) it sets; the parts not here replace functions (apply)
    "linear-8-rows": [(FAST, "REDUCTION_ROWS", 8)],
    "o-proj-kernel": [(FAST, "NORM_LINEAR_O_PROJ", True)],
    "rows-kernel": [(FAST, "NORM_LINEAR_ROWS", 16)],
    "fragment-projections": [(FAST, "FRAGMENT_PROJECTIONS", True),
                             ("gptoss_model.kernels.norm_linear", "FRAGMENTS", True)],
    "experts-4-warps": [(FRAGMENTS, "SORTED_WARPS", 4)],
    "experts-one-wave": [(FRAGMENTS, "PREFETCH", False), (FRAGMENTS, "MAX_REGISTERS", 40)],
    "experts-row-2-warps": [(FRAGMENTS, "WARPS", 2)],
    "experts-row-8-warps": [(FRAGMENTS, "WARPS", 8)],
    "experts-two-multiplies": [(FRAGMENTS, "ONE_MULTIPLY", False)],
    "tiled-prefill": [("gptoss_model.kernels.mxfp4_dequantize", "DEQUANTIZE_ROWS", None)],
    "no-fragment-experts": [("gptoss_model.kernels.mxfp4_moe", "FRAGMENTS", False)],
}


def apply(variant: str) -> None:
    """Patch this process for `variant` (its environment part is set by the parent, before torch is imported)."""
    if unknown_parts(variant):
        raise ValueError(f"variant {variant!r}: unknown {unknown_parts(variant)}; expected among {list(PARTS)}")
    from gptoss_model import fast

    parts = variant.split("+")
    for part in parts:
        for module, name, value in SETTINGS.get(part, []):
            setattr(importlib.import_module(module), name, value)
    if "qkv-inductor" in parts:
        fast._attention_inputs = attention_inputs_by_inductor
    if "attention-inductor" in parts:
        fast._one_token_attention = attention_by_inductor
    if "attention-matmul-8" in parts:
        fast._small_matmul = matmul_for_batches(fast._small_matmul)
    for part, switch in INDUCTOR_SWITCHES.items():
        if part in parts:
            import torch._inductor.config as inductor_config

            setattr(inductor_config, switch, True)


def attention_inputs_by_inductor(layer, x, position_embeddings):
    """fast._attention_inputs without the one-token Triton launch: the readable projections, compiled."""
    return layer.self_attn.project(layer.input_layernorm(x), position_embeddings)


def attention_by_inductor(attention, q, k, v, keep):
    """fast._one_token_attention without the Triton launch: fast.one_token_attention, compiled with the step."""
    from gptoss_model import fast

    return fast.one_token_attention(q, k, v, attention.sinks, keep, attention.scaling)


def matmul_for_batches(tree_version):
    """fast._small_matmul, but torch.matmul (cuBLAS) whenever a holds more than one sequence."""
    def small_matmul(a, b):
        return torch.matmul(a, b) if a.shape[0] > 1 else tree_version(a, b)

    return small_matmul


def environment(variant: str) -> dict:
    env = dict(os.environ)
    for part in variant.split("+"):
        env.update(ENVIRONMENT.get(part, {}))
    return env


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--impl", default="ours-mxfp4-graph", choices=("ours-mxfp4-graph", "ours-graph"))
    parser.add_argument("--json")
    parser.add_argument("--prefill", type=int, nargs="*", default=[2048], help="prompt lengths (none: decoding only)")
    parser.add_argument("--single", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        apply(args.single)
        import bench_gpu
        from gptoss_model import GPTOss_20B

        options = types.SimpleNamespace(prefill=args.prefill, decode_batch=[1, 8], decode_steps=32, repeats=3)
        row = bench_gpu.bench_one(args.impl, GPTOss_20B(), options)
        print("ROW " + json.dumps({"variant": args.single, **row}), flush=True)
        return
    for variant in args.variants:
        if unknown_parts(variant):
            parser.error(f"--variants: {variant!r} has unknown {unknown_parts(variant)}; expected among {list(PARTS)}")
    rows = []
    for variant in args.variants:
        child = subprocess.run([sys.executable, __file__, "--impl", args.impl, "--single", variant, "--prefill",
                                *map(str, args.prefill)],
                               capture_output=True, text=True, env=environment(variant))
        found = [line[4:] for line in child.stdout.splitlines() if line.startswith("ROW ")]
        rows.append(json.loads(found[0]) if found else {"variant": variant, "error": child.stderr[-300:]})
        print(json.dumps(rows[-1]), flush=True)
        if args.json:  # after every variant: a call's time limit keeps what was measured
            save({"device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                  "torch": torch.__version__, "impl": args.impl, "rows": rows}, args.json)


def save(result: dict, path: str) -> None:
    with open(path + ".tmp", "w") as out:
        json.dump(result, out, indent=2)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
