#!/usr/bin/env python
"""Write a random-weight gpt-oss checkpoint in the exact official layout (docs/checkpoints.md), in bounded memory.

    python scripts/make_checkpoint.py --shape tiny --out gptoss_convert/data/tiny
    python scripts/make_checkpoint.py --shape 20b --out /tmp/gptoss-20b --layout hf
    python scripts/make_checkpoint.py --shape 20b --layers 4 --out /tmp/gptoss-20b-4l

HF layout at the root: zero-based shards `model-0000K-of-0000N.safetensors` (N = the last index, 4.8 GB cap, as the
hub's conversion script names them), `model.safetensors.index.json` (metadata.total_size + sorted weight_map),
`config.json` as on the hub (with quantization_config), `generation_config.json`; MXFP4 `*_blocks`/`*_scales` U8
for the experts, BF16 for everything else. `original/` beside it: the 16-key `config.json`, `dtypes.json` and
`model.safetensors` (fused qkv, `block.N.*` names) holding the very same bytes. The tiny shape also gets a small
byte-level BPE tokenizer (tokenizer.json, tokenizer_config.json, special_tokens_map.json).

Values are deterministic in --seed and independent of the layout: every one of our parameters is drawn from its own
generator (seeded by seed and name), row chunk by row chunk, so the fused qkv of `original/` is byte-for-byte the
q, k and v of the HF layout. Scales: ~1/sqrt(fan_in) for projections, norms around 1, non-zero biases and sinks
(the experts' gate/up biases wider, std 4, so the ±7 SwiGLU clamps are exercised).
MXFP4 experts: `mxfp4.quantize` of such random weights when small; for big shapes, random FP4 codes with random
scale exponents around 1/sqrt(fan_in)/2.9 (uniform codes have an RMS of ~2.9), which keeps writing 20b fast.
Files are written one tensor chunk at a time through the streaming writer into a temporary directory next to
--out, renamed into place at the end.
"""

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from gptoss_model.config import GPTOss_20B, GPTOss_120B, GPTOssConfig, original_config_dict
from gptoss_model.io import (
    INDEX_NAME,
    Shard,
    ShardWriter,
    index_json,
    one_based_shard_names,
    plan_shards,
    zero_based_shard_names,
)
from gptoss_convert import mxfp4
from gptoss_convert.config_files import MXFP4_QUANTIZATION_CONFIG
from gptoss_convert.remap import Part, expected_tensors, name_template, param_shape, sources
from gptoss_convert.tiny import TINY_CONFIG, TINY_SPECIAL_TOKENS

SHAPES = {"tiny": TINY_CONFIG, "20b": GPTOss_20B(), "120b": GPTOss_120B()}
HF_SHARD_BYTES = 4_800_000_000  # the conversion script's cap; gives the hub's 3 (20b) and 15 (120b) files
TINY_SHARD_BYTES = 150_000  # the tiny checkpoint still gets several shards
ORIGINAL_SINGLE_FILE_MAX = 20_000_000_000  # 20b's original/ is one file; 120b's is sharded
ORIGINAL_SHARD_BYTES = 10_000_000_000
QUANTIZE_MAX_ELEMENTS = 1 << 22  # above this, expert weights get random FP4 codes instead of a real quantization
CHUNK_ELEMENTS = 1 << 24  # rows are generated in chunks of about this many values
TRANSFORMERS_VERSION = "4.55.0.dev0"  # what the hub's 20b config.json says


def shape_config(shape: str, layers: int | None = None) -> GPTOssConfig:
    config = SHAPES[shape]
    if layers is not None:
        config = config.replace(num_hidden_layers=layers, layer_types=())
    return config


# ---- the plan: files, tensors, sizes -------------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckpointPlan:
    layout: str  # "hf" | "original"
    files: tuple[tuple[str, Shard], ...]  # (path relative to --out, shard)
    index: dict | None  # model.safetensors.index.json content, when sharded

    @property
    def total_size(self) -> int:
        return sum(shard.nbytes for _, shard in self.files)


def plan_checkpoint(config: GPTOssConfig, layout: str, max_shard_bytes: int | None = None) -> CheckpointPlan:
    """Which files hold which tensors, for the HF root layout or `original/`. Headers only: nothing is written."""
    specs = list(expected_tensors(config, layout, "mxfp4").values())
    if layout == "hf":
        shards = plan_shards(specs, max_shard_bytes or HF_SHARD_BYTES, zero_based_shard_names)
        return CheckpointPlan("hf", tuple((s.file, s) for s in shards), index_json(shards))
    if sum(s.nbytes for s in specs) <= ORIGINAL_SINGLE_FILE_MAX:  # --max-shard-bytes applies to the HF layout only
        return CheckpointPlan("original", (("original/model.safetensors", Shard("model.safetensors", tuple(specs))),), None)
    shards = plan_shards(specs, ORIGINAL_SHARD_BYTES, one_based_shard_names)
    return CheckpointPlan("original", tuple((f"original/{s.file}", s) for s in shards), index_json(shards))


# The keys of the hub's 20b config.json, no more (the hub's openai/gpt-oss-20b config.json): no bos_token_id (generation_config.json has
# it), no torch_dtype.
HUB_CONFIG_KEYS = (
    "architectures", "attention_bias", "attention_dropout", "eos_token_id", "experts_per_token", "head_dim",
    "hidden_act", "hidden_size", "initial_context_length", "initializer_range", "intermediate_size", "layer_types",
    "max_position_embeddings", "model_type", "num_attention_heads", "num_experts_per_tok", "num_hidden_layers",
    "num_key_value_heads", "num_local_experts", "output_router_logits", "pad_token_id", "quantization_config",
    "rms_norm_eps", "rope_scaling", "rope_theta", "router_aux_loss_coef", "sliding_window", "swiglu_limit",
    "tie_word_embeddings", "transformers_version", "use_cache", "vocab_size",
)


def hf_config_json(config: GPTOssConfig) -> dict:
    """config.json as on the hub: its keys exactly, with quantization_config (written with sorted keys)."""
    body = config.to_hf_config()
    body["quantization_config"] = MXFP4_QUANTIZATION_CONFIG
    body["transformers_version"] = TRANSFORMERS_VERSION
    if float(body["rope_theta"]).is_integer():
        body["rope_theta"] = int(body["rope_theta"])  # the hub writes 150000
    return {key: body[key] for key in HUB_CONFIG_KEYS}


def generation_config_json(config: GPTOssConfig) -> dict:
    eos = [config.eos_token_id, config.pad_token_id] + ([200012] if config.vocab_size > 200012 else [])  # <|call|>
    return {"bos_token_id": config.bos_token_id, "do_sample": True, "eos_token_id": eos,
            "pad_token_id": config.pad_token_id, "transformers_version": TRANSFORMERS_VERSION}


def dtypes_json(plan: CheckpointPlan) -> dict:
    """original/dtypes.json: BF16, except FP4 blocks and UE8 scales (stored as U8 in the headers)."""
    kinds = {}
    for _, shard in plan.files:
        for t in shard.tensors:
            kinds[t.name] = "FP4" if t.name.endswith(".blocks") else "UE8" if t.name.endswith(".scales") else "BF16"
    return kinds


# ---- deterministic values --------------------------------------------------------------------------------------------

def init_stats(template: str, c: GPTOssConfig) -> tuple[float, float]:
    """(mean, std) of one of our parameters: projections ~1/sqrt(fan_in), norms ~1, small non-zero biases."""
    fan_in = param_shape(template, c)[-1]
    if template.endswith("layernorm.weight") or template == "model.norm.weight":
        return 1.0, 0.1
    if template == "model.embed_tokens.weight":
        return 0.0, 1.0
    if template.endswith("gate_up_proj_bias"):
        # wide enough that gate and up values cross the ±swiglu_limit clamps (7.0) for some tokens, so the clamps
        # (and bugs in them) show up in verify
        return 0.0, 4.0
    if template.endswith(("bias", "_bias")):
        return 0.0, 0.1
    if template.endswith("sinks"):
        return 0.0, 1.0
    return 0.0, 1.0 / math.sqrt(fan_in)


class Values:
    """Our parameters' random values, each from its own generator, as row chunks (bf16 or MXFP4 bytes)."""

    def __init__(self, config: GPTOssConfig, seed: int):
        self.config, self.seed = config, seed
        self._quantized: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _generator(self, key: str) -> torch.Generator:
        digest = hashlib.sha256(f"{self.seed}/{key}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)

    def bf16_chunks(self, our_name: str):
        template = name_template(our_name)
        shape = param_shape(template, self.config)
        mean, std = init_stats(template, self.config)
        g = self._generator(our_name)
        for rows in _row_chunks(shape):
            yield torch.empty(rows, dtype=torch.float32).normal_(mean, std, generator=g).to(torch.bfloat16)

    def mxfp4_chunks(self, our_name: str, which: str):
        """Chunks of the blocks ("blocks") or scales ("scales") of expert weight `our_name` ([E, out, in])."""
        shape = param_shape(name_template(our_name), self.config)
        E, out, k = shape
        groups = k // mxfp4.VALUES_PER_BLOCK
        if math.prod(shape) <= QUANTIZE_MAX_ELEMENTS:
            if our_name not in self._quantized:
                std = 1.0 / math.sqrt(k)
                weight = torch.empty(shape).normal_(0.0, std, generator=self._generator(our_name)).to(torch.bfloat16)
                self._quantized = {our_name: mxfp4.quantize(weight, name=our_name)}  # keep one pair at a time
            blocks, scales = self._quantized[our_name]
            yield blocks if which == "blocks" else scales
            return
        g = self._generator(f"{our_name}/{which}")
        if which == "blocks":  # uniformly random codes: 8 random bytes per int64
            for rows in _row_chunks((E, out, groups, mxfp4.BYTES_PER_BLOCK)):
                n = math.prod(rows)
                yield torch.randint(-(2**63), 2**63 - 1, (n // 8,), dtype=torch.int64, generator=g).view(torch.uint8).view(rows)
        else:  # exponents e-1..e with 2^e·2.9 ≈ 1/sqrt(fan_in): uniform codes have an RMS of ~2.9
            center = round(math.log2(1.0 / math.sqrt(k) / 2.9)) + mxfp4.SCALE_BIAS
            for rows in _row_chunks((E, out, groups)):
                yield torch.randint(center - 1, center + 1, rows, dtype=torch.uint8, generator=g)


def _row_chunks(shape: tuple[int, ...]):
    """Leading-dim chunks of `shape` holding about CHUNK_ELEMENTS values each."""
    per_row = math.prod(shape[1:])
    step = max(1, CHUNK_ELEMENTS // max(per_row, 1))
    for start in range(0, shape[0], step):
        yield (min(step, shape[0] - start), *shape[1:])


def tensor_chunks(values: Values, config: GPTOssConfig, layout: str):
    """checkpoint tensor name -> a function returning its chunks, for every tensor of the layout."""
    producers = {}
    for our_name, source in sources(config, layout, "mxfp4").items():
        match source:
            case str():
                producers[source] = lambda n=our_name: values.bf16_chunks(n)
            case (blocks, scales):
                producers[blocks] = lambda n=our_name: values.mxfp4_chunks(n, "blocks")
                producers[scales] = lambda n=our_name: values.mxfp4_chunks(n, "scales")
            case Part(name, part):
                # q, k and v rows in that order make the fused tensor; collect the three our-names per fused name
                producers.setdefault(name, []).append(our_name)
    for name, parts in list(producers.items()):
        if isinstance(parts, list):
            producers[name] = lambda ps=tuple(parts): (c for p in ps for c in values.bf16_chunks(p))
    return producers


# ---- writing ---------------------------------------------------------------------------------------------------------

def write_checkpoint(config: GPTOssConfig, out: Path, layout: str = "both", seed: int = 0,
                     max_shard_bytes: int | None = None, tokenizer: bool = False, progress: bool = True) -> Path:
    """Write the checkpoint into `out` (which must not exist, or be empty) via a temporary directory."""
    from tqdm import tqdm

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"error: {out} exists and is not empty; remove it or pick another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    _umask = os.umask(0o022)
    os.umask(_umask)
    tmp.chmod(0o777 & ~_umask)  # mkdtemp makes it private; the result should look like a normal directory
    try:
        layouts = ("hf", "original") if layout == "both" else (layout,)
        plans = [plan_checkpoint(config, name, max_shard_bytes) for name in layouts]
        values = Values(config, seed)
        total = sum(p.total_size for p in plans)
        with tqdm(total=total, unit="B", unit_scale=True, desc="writing", file=sys.stderr, disable=not progress) as bar:
            for plan in plans:
                _write_layout(plan, config, tmp, values, bar)
        if tokenizer:
            write_tokenizer(tmp, config)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_layout(plan: CheckpointPlan, config: GPTOssConfig, root: Path, values: Values, bar) -> None:
    chunks = tensor_chunks(values, config, plan.layout)
    base = root if plan.layout == "hf" else root / "original"
    base.mkdir(exist_ok=True)
    for relative, shard in plan.files:
        with ShardWriter(root / relative, shard.tensors) as writer:
            for spec in shard.tensors:
                for chunk in chunks[spec.name]():
                    writer.write(spec.name, chunk)
                    bar.update(chunk.numel() * chunk.element_size())
    if plan.index is not None:
        _write_json(base / INDEX_NAME, plan.index)
    if plan.layout == "hf":
        _write_json(root / "config.json", hf_config_json(config))
        _write_json(root / "generation_config.json", generation_config_json(config))
    else:
        _write_json(base / "config.json", _original_config_spelling(original_config_dict(config)), sort_keys=False)
        _write_json(base / "dtypes.json", dtypes_json(plan), sort_keys=False)


def _original_config_spelling(body: dict) -> dict:
    # The hub file writes rope_theta and the NTK betas as integers, the factor and swiglu_limit as floats.
    for key in ("rope_theta", "rope_ntk_alpha", "rope_ntk_beta"):
        if float(body[key]).is_integer():
            body[key] = int(body[key])
    return body


def _write_json(path: Path, body: dict, sort_keys: bool = True) -> None:
    path.write_text(json.dumps(body, indent=2, sort_keys=sort_keys) + "\n")


# ---- the tiny tokenizer ----------------------------------------------------------------------------------------------

CORPUS = """\
The tiny model in this package has the same structure as the large ones, only smaller. Each layer first normalizes
the hidden state, then lets every token attend to the tokens before it. Even layers see only a short window of
recent tokens; odd layers see the whole sequence. Every attention head also has a sink, a learned value that can
absorb attention when no other token deserves it.
After attention comes the mixture of experts. A small router scores every expert for every token and keeps the best
few. The chosen experts each run a gated feed-forward network, and their outputs are added up with the router's
weights. The experts are stored in a compact four-bit format with one shared scale for each block of thirty-two
values, which is why the checkpoint is so much smaller than the model it describes.
A converter reads the files one tensor at a time. It checks that every name it finds is expected, that every
expected name is present, and that each shape and type agrees with the configuration. Then it writes the weights
again in a plain format that the reference model can load without any special code.
Testing a model is mostly a matter of patience. You run the same input through two implementations and compare the
numbers layer by layer. When they agree, you move on. When they do not, the first layer that disagrees tells you
where to look. Small differences are normal when the arithmetic is done in a different order; large ones are not.
The weather was cold and clear on the morning the work began. People walked to the station, read the news, and
talked about the day ahead. Some of them wrote letters, some wrote programs, and some simply watched the trains go
by. In the afternoon the wind turned and brought rain from the west, and by evening the streets were quiet again.
Numbers such as 1, 2, 3, 16, 32, 64 and 128 appear often in this kind of work, as do words like window, head, layer,
token, expert, scale, block, shard, index and header. A good tool explains what it expected and what it found, and
leaves nothing half written behind when it stops.
"""


def build_tokenizer(config: GPTOssConfig):
    """Byte-level BPE trained on CORPUS to vocab_size − 3 entries; the 3 special tokens take the top ids."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    regular = config.vocab_size - len(TINY_SPECIAL_TOKENS)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=regular, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(CORPUS.splitlines(), trainer)
    if tokenizer.get_vocab_size() != regular:
        raise RuntimeError(f"BPE training gave {tokenizer.get_vocab_size()} tokens, expected {regular}")
    for token, token_id in sorted(TINY_SPECIAL_TOKENS.items(), key=lambda kv: kv[1]):
        tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False)])
        if tokenizer.token_to_id(token) != token_id:
            raise RuntimeError(f"{token} got id {tokenizer.token_to_id(token)}, expected {token_id}")
    return tokenizer


def write_tokenizer(root: Path, config: GPTOssConfig) -> None:
    build_tokenizer(config).save(str(root / "tokenizer.json"))
    names = {v: k for k, v in TINY_SPECIAL_TOKENS.items()}
    special = {"bos_token": names[config.bos_token_id], "eos_token": names[config.eos_token_id],
               "pad_token": names[config.pad_token_id]}
    decoder = {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                        "special": True} for t, i in TINY_SPECIAL_TOKENS.items()}
    _write_json(root / "tokenizer_config.json", {
        "added_tokens_decoder": decoder, **special, "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"], "model_max_length": config.max_position_embeddings,
        "tokenizer_class": "PreTrainedTokenizerFast",
    })
    _write_json(root / "special_tokens_map.json", special)


# ---- command line ----------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), required=True)
    parser.add_argument("--layers", type=int, help="override the layer count (disk-limited runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--layout", choices=("hf", "original", "both"), default="both")
    parser.add_argument("--max-shard-bytes", type=int, help="override the shard cap")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.layers is not None and args.layers < 1:
        parser.error("--layers must be at least 1")
    config = shape_config(args.shape, args.layers)
    max_shard = args.max_shard_bytes or (TINY_SHARD_BYTES if args.shape == "tiny" else None)
    out = write_checkpoint(config, args.out, args.layout, args.seed, max_shard, tokenizer=args.shape == "tiny",
                           progress=not args.quiet)
    total = sum(plan_checkpoint(config, name, max_shard).total_size
                for name in (("hf", "original") if args.layout == "both" else (args.layout,)))
    print(f"wrote {out} ({args.shape}, {config.num_hidden_layers} layers, {args.layout} layout, {total:,} bytes of tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
