"""Train gpt-oss with SFT, GRPO or PPO (gptoss_model.train) and record the learning curve.

    python scripts/train.py sft  --model tiny --seed 0 --json runs/sft.json
    python scripts/train.py grpo --model tiny --seed 0 --json runs/grpo.json
    python scripts/train.py ppo  --model tiny --seed 0 --json runs/ppo.json --save-adapters runs/ppo.lora.safetensors

Writes FILE.json with the metric (loss for sft, mean reward for grpo/ppo), `first` and `last` (means over the first
and last five steps), the step count and wall time, and FILE.png, the curve. The default tasks are toys whose
success can be checked: sft learns a small arithmetic chat set; grpo and ppo learn to emit tokens from a target set
(the reward is the share of completion tokens drawn from it). `--data` / `--prompts` / `--reward` replace them.
Bad input (empty dataset, a conversation without an assistant turn, a reward function that raises or returns NaN)
stops with one `error:` line and exit code 2; adapters saved earlier are left as they were (docs/training.md).
"""

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT)) if str(ROOT) not in sys.path else None

from gptoss_model import train  # noqa: E402
from gptoss_model.train import TrainingInputError  # noqa: E402

TARGET_TOKENS = frozenset(range(0, 64))  # the toy RL task: ids 0..63 of the 512 of the tiny vocabulary
DEFAULT_STEPS = {"sft": 60, "grpo": 30, "ppo": 30}


# ---- toy tasks -------------------------------------------------------------------------------------------------


def arithmetic_conversations(count: int, seed: int) -> list:
    generator = torch.Generator().manual_seed(seed)
    pairs = torch.randint(0, 10, (count, 2), generator=generator).tolist()
    return [[{"role": "user", "content": f"What is {a} + {b}?"},
             {"role": "assistant", "content": f"{a} + {b} = {a + b}."}] for a, b in pairs]


def random_prompts(count: int, vocab_size: int, seed: int) -> list:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 9, (count,), generator=generator).tolist()
    return [torch.randint(64, vocab_size - 3, (n,), generator=generator).tolist() for n in lengths]


def target_share_reward(prompt: list[int], completion: list[int]) -> float:
    """Share of the completion's tokens (eos included) that belong to TARGET_TOKENS."""
    return sum(t in TARGET_TOKENS for t in completion) / max(len(completion), 1)


# ---- inputs ----------------------------------------------------------------------------------------------------


def read_jsonl(path) -> list:
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise TrainingInputError(f"{path}:{number}: not a JSON line ({error.msg})") from None
    return rows


def load_reward(spec: str | None):
    if spec is None:
        return target_share_reward
    module_name, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise TrainingInputError(f"--reward {spec!r}: cannot import it ({error}); expected MODULE:FUNCTION") from None


def load(model_name: str):
    """The model and its checkpoint directory (tiny, 20b, 120b or a directory in any layout gptoss_convert reads)."""
    from gptoss_convert import load_model
    from gptoss_convert.sources import resolve_source

    return load_model(model_name), Path(resolve_source(model_name))


def chat_functions(directory: Path, template_file: str | None):
    """render(messages) -> text through the chat template (Transformers' chat templating), encode(text) -> (ids,
    offsets) through the checkpoint's tokenizer."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(directory))
    if template_file:
        tokenizer.chat_template = Path(template_file).read_text()
    if not tokenizer.chat_template:
        raise TrainingInputError(f"{directory}: no chat template (chat_template.jinja); pass --chat-template FILE")

    def render(messages):
        return tokenizer.apply_chat_template(messages, tokenize=False)

    def encode(text):
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return encoded["input_ids"], encoded["offset_mapping"]

    return render, encode


# ---- the three commands --------------------------------------------------------------------------------------


def prepare(model, args):
    """Adapters (or full fine-tuning) and activation checkpointing, as asked."""
    if args.lora_rank > 0:
        train.attach_lora(model, rank=args.lora_rank, alpha=2.0 * args.lora_rank, targets=args.lora_targets.split(","))
    if args.activation_checkpointing:
        train.enable_activation_checkpointing(model)


def sft_steps(model, directory, args):
    conversations = read_jsonl(args.data) if args.data else arithmetic_conversations(64, args.seed)
    render, encode = chat_functions(directory, args.chat_template)
    examples = train.tokenize_conversations(conversations, render, encode)
    config = train.SFTConfig(steps=args.steps, seed=args.seed, **({"lr": args.lr} if args.lr else {}))
    return train.train_sft(model, examples, pad_id=model.config.pad_token_id, config=config)


def rl_steps(model, args):
    prompts = read_jsonl(args.prompts) if args.prompts else random_prompts(32, model.config.vocab_size, args.seed)
    reward_fn = load_reward(args.reward)
    options = {"steps": args.steps, "seed": args.seed, **({"lr": args.lr} if args.lr else {})}
    common = dict(pad_id=model.config.pad_token_id, eos_token_id=model.config.eos_token_id)
    if args.command == "grpo":
        return train.train_grpo(model, prompts, reward_fn, config=train.GRPOConfig(**options), **common)
    return train.train_ppo(model, prompts, reward_fn, config=train.PPOConfig(**options), **common)


def run(args) -> dict:
    from tqdm import tqdm

    torch.manual_seed(args.seed)
    model, directory = load(args.model)
    prepare(model, args)
    steps = sft_steps(model, directory, args) if args.command == "sft" else rl_steps(model, args)
    metric = "loss" if args.command == "sft" else "reward"
    curve, start = [], time.perf_counter()
    with tqdm(steps, total=args.steps, desc=args.command, unit="step", file=sys.stderr) as bar:
        for record in bar:
            curve.append(record)
            bar.set_postfix({metric: f"{record[metric]:.4f}"})
    wall = time.perf_counter() - start
    if args.save_adapters and args.lora_rank > 0:
        train.save_adapters(model, args.save_adapters, args.lora_targets.split(","))
    if args.merge_to:
        train.merge_lora(model).save_pretrained(args.merge_to)
    values = [r[metric] for r in curve]
    return {"command": args.command, "model": args.model, "seed": args.seed, "metric": metric,
            "first": sum(values[:5]) / len(values[:5]), "last": sum(values[-5:]) / len(values[-5:]),
            "steps": len(values), "wall_s": round(wall, 2), "torch_threads": torch.get_num_threads(),
            "lora_rank": args.lora_rank, "curve": curve}


def plot(result: dict, path: Path):
    """The learning curve as a PNG (matplotlib, the `train` extra; a headless backend)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(6, 3.5))
    axes.plot([r["step"] for r in result["curve"]], [r[result["metric"]] for r in result["curve"]], marker=".")
    axes.set_xlabel("step")
    axes.set_ylabel(result["metric"])
    axes.set_title(f"{result['command']} on {result['model']} (seed {result['seed']}): "
                   f"{result['first']:.3g} -> {result['last']:.3g}")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100, format="png")
    pyplot.close(figure)


def write_outputs(result: dict, json_path: Path):
    from gptoss_model.io import atomic_write_text, atomic_write_with

    json_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json_path, json.dumps(result, indent=2) + "\n")
    atomic_write_with(json_path.with_suffix(".png"), lambda tmp: plot(result, Path(tmp)))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=sorted(DEFAULT_STEPS))
    parser.add_argument("--model", default="tiny", help="tiny, 20b, 120b or a checkpoint directory (default: tiny)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the result here, and the curve beside it as .png")
    parser.add_argument("--steps", type=int, help="optimiser rounds (default: sft 60, grpo 30, ppo 30)")
    parser.add_argument("--lr", type=float, help="learning rate (default: the command's config default)")
    parser.add_argument("--lora-rank", type=int, default=16, help="LoRA rank; 0 trains every parameter (default 16)")
    parser.add_argument("--lora-targets", default="attention,router", help="of attention, router, experts")
    parser.add_argument("--activation-checkpointing", action="store_true", help="recompute each layer in backward")
    parser.add_argument("--data", help="sft: a JSONL file, one conversation (a list of messages) per line")
    parser.add_argument("--chat-template", help="sft: a Jinja chat template to use instead of the checkpoint's")
    parser.add_argument("--prompts", help="grpo/ppo: a JSONL file, one prompt (a list of token ids) per line")
    parser.add_argument("--reward", help="grpo/ppo: MODULE:FUNCTION(prompt_ids, completion_ids) -> float")
    parser.add_argument("--save-adapters", type=Path, help="write the trained LoRA adapters (safetensors) here")
    parser.add_argument("--merge-to", type=Path, help="merge the adapters and save the model in our format here")
    args = parser.parse_args(argv)
    args.steps = args.steps or DEFAULT_STEPS[args.command]
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except TrainingInputError as error:
        return fail(str(error), 2)
    except Exception as error:
        code = getattr(error, "exit_code", None)  # gptoss_convert's typed errors carry theirs
        if code is None or os.environ.get("GPTOSS_CONVERT_DEBUG") == "1":
            raise
        return fail(str(error), code)
    print(f"{args.command}: {result['metric']} {result['first']:.4f} -> {result['last']:.4f} "
          f"in {result['steps']} steps, {result['wall_s']:.1f} s")
    if args.json:
        write_outputs(result, args.json)
    return 0


def fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
