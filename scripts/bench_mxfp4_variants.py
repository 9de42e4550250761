"""Session 4's same-run experiment on the batch-1 and batch-8 MXFP4 expert kernel (docs/benchmarks.md, "fourth
session"): the kernel as it stood at commit b5f336f against three variants built from that same source, one 20b
layer's two launches (gate/up with the SwiGLU, then down), CUDA-graph replays:

- "pairs2": one-row tiles with x read in the weight tile's own layout, bf16 pairs as 32-bit words, so x never
  passes through shared memory (what mxfp4_moe._x_pairs now does in the tree);
- "pairs2p": the same with the next step's loads issued before this step's arithmetic (a hand-written pipeline);
- "swap": tensor-core tiles with the weights as the dot's first operand (decoded in registers, no shared-memory
  copy of them) and x transposed as the second: out^T = W · x^T, as OpenAI's triton_kernels do for small batches.

    git show b5f336f:gptoss_model/kernels/mxfp4_moe.py > /tmp/mxfp4_moe_b5f336f.py
    PYTHONPATH=. python3 scripts/bench_mxfp4_variants.py --base /tmp/mxfp4_moe_b5f336f.py --json variants.json
    TRITON_INTERPRET=1 PYTHONPATH=. python3 scripts/bench_mxfp4_variants.py --base ... --cpu-check   # no GPU

The variants live here as edits of the base source (VARIANT_EDITS), not in the tree: two of them lost (the table in
docs/benchmarks.md), and the winner replaced the one-row step in gptoss_model/kernels/mxfp4_moe.py.
"""

import argparse
import importlib.util
import itertools
import json
import os
import sys
import tempfile

import torch

sys.path.insert(0, ".")
from gptoss_model.mxfp4_experts import dequantize  # noqa: E402

LOAD_AND_MATH = '''@triton.jit
def _matvec_load(xp_ptr, x_row, blocks_ptr, scales_ptr, w_row, col_ok, k0, K, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    G: tl.constexpr = BLOCK_K // 32
    group = k0 // 32 + tl.arange(0, G)
    byte = tl.arange(0, 16)
    group_ok = group < K // 32
    at = (w_row[:, None, None] * (K // 32) + group[None, :, None]) * 16 + byte[None, None, :]
    packed = tl.load(blocks_ptr + at, mask=col_ok[:, None, None] & group_ok[None, :, None], other=0)
    pair_at = tl.broadcast_to((x_row * (K // 32) + group[None, :, None]) * 16 + byte[None, None, :], (BLOCK_N, G, 16))
    pairs = tl.load(xp_ptr + pair_at, mask=tl.broadcast_to(group_ok[None, :, None], (BLOCK_N, G, 16)), other=0)
    scale = tl.load(scales_ptr + w_row[:, None] * (K // 32) + group[None, :], mask=col_ok[:, None] & group_ok[None, :], other=127)
    return packed, pairs, scale


@triton.jit
def _matvec_math(packed, pairs, scale, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    G: tl.constexpr = BLOCK_K // 32
    x_even = (pairs << 16).to(tl.float32, bitcast=True)
    x_odd = (pairs & -65536).to(tl.float32, bitcast=True)
    if PTX_OK:
        scale_bf16 = tl.broadcast_to(_e8m0(scale).to(tl.bfloat16)[:, :, None], (BLOCK_N, G, 16))
        low, high = _e2m1_pairs(packed, scale_bf16)
        return tl.sum(low.to(tl.float32) * x_even + high.to(tl.float32) * x_odd, axis=2)
    low, high = _e2m1(packed & 0x0F), _e2m1(packed >> 4)
    return tl.sum(low * x_even + high * x_odd, axis=2) * _e8m0(scale)


@triton.jit
def _load_tile('''

PATHS = '''    if DECODE == "pairs2" or DECODE == "pairs2p":
        xp_ptr = x_ptr.to(tl.pointer_type(tl.int32), bitcast=True)
        x_row = tl.sum(x_rows)
        groups = tl.zeros((BLOCK_N, BLOCK_K // 32), dtype=tl.float32)
        if DECODE == "pairs2p":
            nxt_p, nxt_x, nxt_s = _matvec_load(xp_ptr, x_row, blocks_ptr, scales_ptr, w_row, col_ok, k_first, K, BLOCK_N, BLOCK_K)
            for k0 in range(k_first, k_last, BLOCK_K):
                cur_p, cur_x, cur_s = nxt_p, nxt_x, nxt_s
                nxt_p, nxt_x, nxt_s = _matvec_load(xp_ptr, x_row, blocks_ptr, scales_ptr, w_row, col_ok, k0 + BLOCK_K, K, BLOCK_N, BLOCK_K)
                groups += _matvec_math(cur_p, cur_x, cur_s, BLOCK_N, BLOCK_K)
        else:
            for k0 in range(k_first, k_last, BLOCK_K):
                p, xx, sc = _matvec_load(xp_ptr, x_row, blocks_ptr, scales_ptr, w_row, col_ok, k0, K, BLOCK_N, BLOCK_K)
                groups += _matvec_math(p, xx, sc, BLOCK_N, BLOCK_K)
        acc = tl.sum(groups, axis=1)[None, :]
    elif DECODE == "swap":
        acc_t = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        for k0 in range(k_first, k_last, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            xt = tl.load(x_ptr + x_rows[None, :] * K + k[:, None], mask=row_ok[None, :] & (k < K)[:, None], other=0.0)
            if PTX_OK:
                w = _weight_tile_pairs(blocks_ptr, scales_ptr, w_row, col_ok, k0, K, BLOCK_N, BLOCK_K)
                acc_t = tl.dot(w, xt, acc_t)
            else:
                w = _weight_tile(blocks_ptr, scales_ptr, w_row, col_ok, k0, K, BLOCK_N, BLOCK_K, "bits")
                acc_t = tl.dot(w, xt.to(tl.float32), acc_t, input_precision="ieee")
        acc = tl.trans(acc_t)
    elif ONE_ROW:  # a matrix-vector product'''

VARIANT_EDITS = [  # (text of the base source, its replacement)
    ("@triton.jit\ndef _load_tile(", LOAD_AND_MATH),
    ("    if ONE_ROW:  # a matrix-vector product", PATHS),
    ('DECODES = ("bits", "f16", "pairs", "scaled")', 'DECODES = ("bits", "f16", "pairs", "scaled", "pairs2", "pairs2p", "swap")'),
    ("    one_row = tile.block_m == 1\n", '    one_row = tile.block_m == 1 or tile.decode in ("pairs2", "pairs2p")\n'),
    ('    if decode == "pairs" and INTERPRETED:\n        decode = "f16"',
     '    if decode in ("pairs", "pairs2", "pairs2p", "swap") and INTERPRETED:\n        decode = {"pairs": "f16"}.get(decode, decode)'),
    ("F16_DECODE_SCALE = tl.constexpr(16384.0)", "F16_DECODE_SCALE = tl.constexpr(16384.0)\nPTX_OK = tl.constexpr(not INTERPRETED)"),
]


def module_from_source(name, source):
    path = tempfile.NamedTemporaryFile("w", suffix=f"_{name}.py", delete=False)
    path.write(source)
    path.close()
    spec = importlib.util.spec_from_file_location(name, path.name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # Triton reads a jitted function's source from its file: keep the file
    return module


def modules(base_path):
    base = open(base_path).read()
    edited = base
    for old, new in VARIANT_EDITS:
        if old not in edited:
            raise SystemExit(f"{base_path}: expected the kernel of commit b5f336f; missing {old.splitlines()[0]!r}")
        edited = edited.replace(old, new)
    return module_from_source("mxfp4_base", base), module_from_source("mxfp4_variants", edited)


def tile_rows(tokens, per_row, device, experts=32, seed=0):
    """x [tokens, H], the rows' tiles (a row a tile, or tiles of block_m rows by expert), x_rows, experts read."""
    generator = torch.Generator().manual_seed(seed + tokens)
    _, indices = torch.topk(torch.randn(tokens, experts, generator=generator), 4)
    flat = indices.reshape(-1)
    order = torch.argsort(flat, stable=True)
    x_rows = (order // 4).int().to(device)
    if per_row:
        start = torch.arange(flat.numel(), dtype=torch.int32, device=device)
        return (flat[order].int().to(device), start, start + 1), x_rows, flat.unique().numel()
    ends = torch.bincount(flat, minlength=experts).cumsum(0).int().to(device)
    return ends, x_rows, flat.unique().numel()


def two_launches(module, experts, x, tiles, x_rows, tile):
    a = module.moe_mxfp4_linear(x, *experts["gate_up"], tiles, x_rows, (1.702, 7.0), tile)
    return module.moe_mxfp4_linear(a, *experts["down"], tiles, None, None, tile)


def cpu_check(base, variants):
    """Under Triton's interpreter: every variant against the base kernel and dequantize-then-matmul, small shapes."""
    T = variants.TileConfig
    g = torch.Generator().manual_seed(0)
    E, N, K = 3, 128, 160
    blocks = torch.randint(0, 256, (E, N, K // 32, 16), dtype=torch.uint8, generator=g)
    scales = torch.randint(122, 130, (E, N, K // 32), dtype=torch.uint8, generator=g)
    bias = torch.randn(E, N, generator=g).bfloat16()
    x = torch.randn(7, K, generator=g).bfloat16()
    expert_of_row = torch.tensor([0, 0, 0, 2, 2])
    x_rows = torch.tensor([4, 0, 6, 6, 1], dtype=torch.int32)
    W = dequantize(blocks, scales, torch.float32)
    want = torch.stack([x[r].float() @ W[e].T for r, e in zip(x_rows.tolist(), expert_of_row.tolist())])
    want = want.bfloat16() + bias[expert_of_row]
    for tile in (T(1, 16, 64, 4, 3, 1, "pairs2"), T(1, 32, 128, 4, 3, 1, "pairs2p"), T(16, 64, 64, 4, 3, 1, "swap")):
        if tile.block_m == 1:
            tiles = (expert_of_row.int(), torch.arange(5, dtype=torch.int32), torch.arange(1, 6, dtype=torch.int32))
        else:
            tiles = variants.tiles_by_expert(torch.tensor([3, 3, 5], dtype=torch.int32), 5, tile.block_m)
        out = variants.moe_mxfp4_linear(x, blocks, scales, bias, tiles, x_rows, None, tile)
        error = ((out.float() - want.float()).abs().max() / want.float().abs().max()).item()
        print(json.dumps({"tile": list(tile), "max_relative_error": round(error, 5)}))
        assert error <= 2 ** -6, tile  # bf16 rounding of the output


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="gptoss_model/kernels/mxfp4_moe.py as of commit b5f336f")
    parser.add_argument("--json")
    parser.add_argument("--cpu-check", action="store_true")
    args = parser.parse_args()
    base, variants = modules(args.base)
    if args.cpu_check:
        return cpu_check(base, variants)
    import triton.testing

    from gptoss_model import GPTOss_20B
    from gptoss_model.mxfp4_experts import MXFP4Experts, fill_random_

    config = GPTOss_20B(num_hidden_layers=1)
    torch.manual_seed(0)
    layer = fill_random_(MXFP4Experts(config, device="cuda", dtype=torch.bfloat16))
    experts = {"gate_up": (layer.gate_up_proj_blocks, layer.gate_up_proj_scales, layer.gate_up_proj_bias),
               "down": (layer.down_proj_blocks, layer.down_proj_scales, layer.down_proj_bias)}
    per_expert_bytes = 3 * config.hidden_size * config.intermediate_size * 17 / 32
    T = variants.TileConfig
    rows = []

    def measure(label, module, tokens, tile, per_row, reference=None):
        tiles, x_rows, chosen = tile_rows(tokens, per_row, "cuda")
        if not per_row:
            tiles = module.tiles_by_expert(tiles, x_rows.numel(), tile.block_m)
        x = torch.randn(tokens, config.hidden_size, device="cuda", generator=torch.Generator("cuda").manual_seed(tokens))
        x = x.to(torch.bfloat16)
        out = two_launches(module, experts, x, tiles, x_rows, tile)
        ms = triton.testing.do_bench_cudagraph(lambda: two_launches(module, experts, x, tiles, x_rows, tile), rep=100)
        row = {"label": label, "tokens": tokens, "tile": list(tile), "ms": round(ms, 4),
               "GB_s": round(chosen * per_expert_bytes / ms / 1e6, 1)}
        if reference is not None:
            row["max_rel_diff_vs_base"] = round(((out.float() - reference.float()).abs().max()
                                                 / reference.float().abs().max()).item(), 5)
        rows.append(row)
        print(json.dumps(row), flush=True)
        return out

    with torch.no_grad():
        for tokens in (1, 8):
            label = "base one_row" if tokens == 1 else "base one_row, a tile per (token, expert)"
            reference = measure(label, base, tokens, base.CONFIGS["one_row"], True)
            if tokens == 8:
                measure("base small", base, 8, base.CONFIGS["small"], False, reference)
            for n, k, warps in itertools.product((8, 16, 32), (256, 512), (4, 8)):
                for decode in ("pairs2", "pairs2p"):
                    measure(decode, variants, tokens, T(1, n, k, warps, 3, 1, decode), True, reference)
            for n, k, stages in itertools.product((64, 128), (64, 128, 256), (3, 4)):
                measure("swap", variants, tokens, T(16, n, k, 4, stages, 1, "swap"), tokens == 1, reference)
    if args.json:
        with open(args.json + ".tmp", "w") as out:
            json.dump(rows, out, indent=1)
        os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
    main()
