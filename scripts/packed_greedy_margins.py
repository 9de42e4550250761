"""How far float32 rounding moves the logits of a small random model, packed MXFP4 experts (the fused Triton kernel,
run on the CPU through Triton's interpreter) against the same experts dequantized, along 64 greedy tokens; and the
smallest top-2 gap those tokens were chosen with. A greedy flip needs the gap to be below the difference: the ratio
says how safe a "64 greedy tokens equal" test is at each weight scale (tests/test_gpu_mxfp4.py).

    OMP_NUM_THREADS=2 PYTHONPATH=. python scripts/packed_greedy_margins.py --json margins.json
"""

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is first imported

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, ".")
from gptoss_model.kernels.mxfp4_moe import packed_experts_forward  # noqa: E402
from gptoss_model.mxfp4_experts import MXFP4Experts  # noqa: E402
from tests.test_gpu_mxfp4 import build_pair  # noqa: E402


def margins(std: float, seed: int, steps: int) -> dict:
    dense, packed = build_pair(std, torch.float32, device="cpu", implementation="eager", seed=seed)
    prompt = torch.randint(0, dense.config.vocab_size, (1, 16))
    tokens = dense.generate(prompt, steps)
    with torch.no_grad():
        want = dense(input_ids=tokens)[0, 15:-1]  # [steps, V]: the logits each greedy step chose from
        got = packed(input_ids=tokens)[0, 15:-1]
    diff = (got - want).abs().max().item()
    gap = want.topk(2, -1).values.diff(dim=-1).abs().min().item()
    return {"std": std, "seed": seed, "max_logit_diff": diff, "max_logit": want.abs().max().item(),
            "smallest_top2_gap": gap, "gap_over_diff": gap / max(diff, 1e-30),
            "distinct_tokens": tokens[0, 16:].unique().numel()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--std", type=float, nargs="+", default=[0.3, 0.1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--json")
    args = parser.parse_args()
    # on the CPU MXFP4Experts runs its own loop; here the Triton kernel runs instead, interpreted
    MXFP4Experts.forward = lambda self, x, weights, indices: packed_experts_forward(self, x, weights, indices)
    rows = []
    for std in args.std:
        for seed in args.seeds:
            rows.append(margins(std, seed, args.steps))
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": datetime.date.today().isoformat(), "command": " ".join(sys.argv),
                       "torch": torch.__version__, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
