"""Time one GRPO step with LoRA on the 20b shape and record peak GPU memory (docs/benchmarks.md, "GRPO step").

The model is built with random weights directly on the device in bf16 (no checkpoint needed: the figures depend on
shapes, not values). One step = sample G completions of one prompt through the KV cache, score them (the toy
target-set reward of scripts/train.py), reference log-probabilities (adapters off), one policy forward + backward
with per-layer activation checkpointing, one AdamW step on the adapters. Completions run their full length (no eos).
The first step includes warm-up; the JSON records every step, by phase.

    python scripts/bench_grpo_gpu.py --out $OUT/bench_grpo.json             # 20b, G = 8, 256 new tokens, bf16
    python scripts/bench_grpo_gpu.py --shape test --device cpu --out /tmp/b.json   # the CPU smoke test
"""

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gptoss_model import GPTOss_20B, GPTOss_Small, GPTOssModelFull  # noqa: E402
from gptoss_model import train  # noqa: E402
from gptoss_model.train.grpo import GRPOConfig, group_advantages, grpo_update  # noqa: E402
from gptoss_model.train.rl import draw, reference_logprobs, score  # noqa: E402

SHAPES = {
    "20b": GPTOss_20B,
    "test": lambda: GPTOss_Small(vocab_size=512, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_local_experts=4,
                                 num_experts_per_tok=2, sliding_window=8),
}


def target_share_reward(vocab_size: int):
    """The share of completion tokens among the lowest eighth of the vocabulary."""
    return lambda prompt, completion: sum(t < vocab_size // 8 for t in completion) / max(len(completion), 1)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device, fn):
    synchronize(device)
    start = time.perf_counter()
    value = fn()
    synchronize(device)
    return value, time.perf_counter() - start


def grpo_step(model, optimizer, params, prompt, config, device, generator) -> dict:
    """One GRPO step, phase by phase (seconds)."""
    model.eval()
    rollout, t_rollout = timed(device, lambda: draw(model, [prompt], config.group_size, 0, config.max_new_tokens,
                                                    config.temperature, None, generator))
    rewards, t_score = timed(device, lambda: score(target_share_reward(model.config.vocab_size), rollout))
    advantages = group_advantages(rewards.view(-1, config.group_size)).flatten()
    ref_logp, t_ref = timed(device, lambda: reference_logprobs(model, None, rollout, config.temperature))
    model.train()
    (loss, stats), t_update = timed(device, lambda: grpo_update(model, optimizer, params, rollout, advantages,
                                                                ref_logp, config))
    return {"rollout_s": t_rollout, "reward_s": t_score, "reference_s": t_ref, "update_s": t_update,
            "step_s": t_rollout + t_score + t_ref + t_update, "completion_tokens": int(rollout.completion_mask.sum()),
            "loss": loss.item(), **stats}


def build(args, device, dtype):
    config = SHAPES[args.shape]()
    torch.manual_seed(args.seed)
    model = GPTOssModelFull(config, device=device, dtype=dtype)
    if args.implementation != "eager":
        model.set_implementation(args.implementation)
    params = train.attach_lora(model, rank=args.lora_rank, alpha=2.0 * args.lora_rank, targets=args.targets.split(","))
    if not args.no_checkpointing:
        train.enable_activation_checkpointing(model)
    return model, params


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="20b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--targets", default="attention,router", help="LoRA targets: attention, router, experts")
    parser.add_argument("--implementation", choices=["eager", "fast"], default="eager")
    parser.add_argument("--no-checkpointing", action="store_true", help="keep every layer's activations")
    parser.add_argument("--steps", type=int, default=2, help="steps to time (the first includes warm-up)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="the JSON result")
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

    (model, params), t_build = timed(device, lambda: build(args, device, dtype))
    weights_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    config = GRPOConfig(group_size=args.group_size, max_new_tokens=args.new_tokens, updates_per_batch=1)
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0)
    generator = torch.Generator(device).manual_seed(args.seed)
    prompt = torch.randint(0, model.config.vocab_size, (args.prompt_tokens,), generator=torch.Generator().manual_seed(args.seed)).tolist()
    after_build = torch.cuda.memory_allocated(device) / 2**30 if device.type == "cuda" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    steps = []
    for _ in range(args.steps):
        steps.append(grpo_step(model, optimizer, params, prompt, config, device, generator))
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in steps[-1].items()}), flush=True)
    result = {
        "command": " ".join(["python", "scripts/bench_grpo_gpu.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.date.today().isoformat(), "torch": torch.__version__, "python": platform.python_version(),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "shape": args.shape, "dtype": args.dtype, "group_size": args.group_size, "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens, "lora_rank": args.lora_rank, "lora_targets": args.targets,
        "activation_checkpointing": not args.no_checkpointing, "implementation": args.implementation,
        "parameters": sum(p.numel() for p in model.parameters()), "trainable_parameters": sum(p.numel() for p in params),
        "weights_gib": weights_bytes / 2**30, "allocated_after_build_gib": after_build, "build_s": t_build, "steps": steps,
        "peak_allocated_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"GRPO step ({args.shape}, G={args.group_size}, {args.new_tokens} new tokens): "
          f"{steps[-1]['step_s']:.2f} s, peak {result['peak_allocated_gib'] or 0:.1f} GiB -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
