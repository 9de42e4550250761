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
from gptoss_convert import mxfp4, official
from gptoss_convert.official import generation_config_json, hf_config_json, pretty_json
from gptoss_convert.prompts import CHAT_TEMPLATE_FILE, harmony_template_path
from gptoss_convert.remap import Part, expected_tensors, name_template, param_shape, sources
from gptoss_convert.tiny import TINY_CONFIG, TINY_SPECIAL_TOKENS, UNUSED_BYTES_FOR_SPECIAL_TOKENS

SHAPES = {"tiny": TINY_CONFIG, "20b": GPTOss_20B(), "120b": GPTOss_120B()}
HF_SHARD_BYTES = official.HUB_SHARD_BYTES  # the conversion script's cap; gives the hub's 3 (20b) and 15 (120b) files
TINY_SHARD_BYTES = 150_000  # the tiny checkpoint still gets several shards
ORIGINAL_SINGLE_FILE_MAX = 20_000_000_000  # 20b's original/ is one file; 120b's is sharded
ORIGINAL_SHARD_BYTES = 10_000_000_000
QUANTIZE_MAX_ELEMENTS = 1 << 22  # above this, expert weights get random FP4 codes instead of a real quantization
CHUNK_ELEMENTS = 1 << 24  # rows are generated in chunks of about this many values


def shape_config(shape: str, layers: int | None = None) -> GPTOssConfig:
    config = SHAPES[shape]
    if layers is not None:
        config = config.replace(num_hidden_layers=layers, layer_types=())
    return config


# ---- the plan: files, tensors, sizes -------------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckpointPlan:
    layout: str  # "hf" | "original"
    files: tuple[tuple[str, Shard], ...]  # (path relative to --out, shard; its tensors in write order)
    index: dict | None  # model.safetensors.index.json content, when sharded
    hub: bool = True  # the hub's order, headers and index spelling; False: the frozen tiny checkpoint's own

    @property
    def total_size(self) -> int:
        return sum(shard.nbytes for _, shard in self.files)

    def index_text(self) -> str:
        return official.index_text(self.index) if self.hub else pretty_json(self.index)


def plan_checkpoint(config: GPTOssConfig, layout: str, max_shard_bytes: int | None = None,
                    hub: bool = True) -> CheckpointPlan:
    """Which files hold which tensors, for the HF root layout or `original/`. Headers only: nothing is written.

    hub=True follows the hub (gptoss_convert/official.py): its tensor order for the index and the shard split,
    safetensors' order inside each file. hub=False is the order the tiny checkpoint was made with (model order,
    sorted index), kept so that its files stay byte for byte what other work computed goldens from."""
    specs = expected_tensors(config, layout, "mxfp4")
    if hub:
        order = official.hf_tensor_order(config) if layout == "hf" else official.original_tensor_order(config)
        specs = {name: specs[name] for name in order}
    specs = list(specs.values())
    if layout == "hf":
        shards = plan_shards(specs, max_shard_bytes or HF_SHARD_BYTES, zero_based_shard_names)
        return _plan("hf", [(s.file, s) for s in shards], shards, hub)
    if sum(s.nbytes for s in specs) <= ORIGINAL_SINGLE_FILE_MAX:  # --max-shard-bytes applies to the HF layout only
        return _plan("original", [("original/model.safetensors", Shard("model.safetensors", tuple(specs)))], None, hub)
    naming = official.original_shard_names if hub else one_based_shard_names
    shards = plan_shards(specs, ORIGINAL_SHARD_BYTES, naming)
    return _plan("original", [(f"original/{s.file}", s) for s in shards], shards, hub)


def _plan(layout: str, files: list, shards: list | None, hub: bool) -> CheckpointPlan:
    index = None
    if shards is not None:
        index = index_json(shards)
        if hub:  # the hub's index keeps the planning order
            index["weight_map"] = {t.name: s.file for s in shards for t in s.tensors}
    if hub:  # inside each file, the safetensors library's order
        files = [(path, Shard(s.file, tuple(official.safetensors_data_order(s.tensors)))) for path, s in files]
    return CheckpointPlan(layout, tuple(files), index, hub)


def metadata_files(config: GPTOssConfig, plan: CheckpointPlan) -> dict[str, str]:
    """Every non-weight file of one layout: path relative to --out -> text."""
    if plan.layout == "hf":
        files = {"config.json": pretty_json(hf_config_json(config)),
                 "generation_config.json": pretty_json(generation_config_json(config)),
                 CHAT_TEMPLATE_FILE: harmony_template_path().read_text()}
        if plan.index is not None:
            files[INDEX_NAME] = plan.index_text()
        return files
    names = official.original_tensor_order(config)
    files = {"original/config.json": json.dumps(official.original_config_json(original_config_dict(config)), indent=2) + "\n",
             "original/dtypes.json": json.dumps(official.dtypes_json(names), indent=2) + "\n"}
    if plan.index is not None:
        files[f"original/{INDEX_NAME}"] = plan.index_text()
    return files


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

def layouts_of(layout: str) -> tuple[str, ...]:
    return ("hf", "original") if layout == "both" else (layout,)


def write_checkpoint(config: GPTOssConfig, out: Path, layout: str = "both", seed: int = 0,
                     max_shard_bytes: int | None = None, tokenizer: bool = False, progress: bool | None = True,
                     metadata_only: bool = False, hub: bool = True) -> Path:
    """Write the checkpoint into `out` (which must not exist, or be empty) via a temporary directory.
    metadata_only: every file but the weights (configs, index, tokenizer files, chat template, original/ json)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"error: {out} exists and is not empty; remove it or pick another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    _umask = os.umask(0o022)
    os.umask(_umask)
    tmp.chmod(0o777 & ~_umask)  # mkdtemp makes it private; the result should look like a normal directory
    try:
        plans = [plan_checkpoint(config, name, max_shard_bytes, hub) for name in layouts_of(layout)]
        files = {path: text for plan in plans for path, text in metadata_files(config, plan).items()}
        if "hf" in layouts_of(layout):
            files.update(tokenizer_files(config, tokenizer))
        for relative, text in files.items():
            (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
            (tmp / relative).write_text(text)
        if not metadata_only:
            _write_weights(plans, config, tmp, Values(config, seed), progress)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_weights(plans: list[CheckpointPlan], config: GPTOssConfig, root: Path, values: Values, progress) -> None:
    from gptoss_convert.progress import progress_bar

    total = sum(p.total_size for p in plans)
    with progress_bar(total=total, unit="B", desc="writing", enabled=progress) as bar:
        for plan in plans:
            chunks = tensor_chunks(values, config, plan.layout)
            for relative, shard in plan.files:
                (root / relative).parent.mkdir(parents=True, exist_ok=True)
                with ShardWriter(root / relative, shard.tensors, with_metadata=not plan.hub) as writer:
                    for spec in shard.tensors:
                        for chunk in chunks[spec.name]():
                            writer.write(spec.name, chunk)
                            bar.update(chunk.numel() * chunk.element_size())


def tokenizer_files(config: GPTOssConfig, tiny_tokenizer: bool) -> dict[str, str]:
    """tokenizer_config.json and special_tokens_map.json in the hub's spelling: o200k_harmony's added tokens for the
    real vocabulary (its tokenizer.json cannot be generated here, so there is none), or the tiny tokenizer's, with
    its tokenizer.json."""
    if config.vocab_size > max(official.harmony_added_tokens()):
        added = official.harmony_added_tokens()
        files = {}
    elif tiny_tokenizer:
        added = {i: t for t, i in TINY_SPECIAL_TOKENS.items()}
        files = {"tokenizer.json": build_tokenizer(config).to_str(pretty=True)}
    else:
        return {}
    body = official.tokenizer_config_json(added, config, official.HUB_MODEL_MAX_LENGTH)
    files["tokenizer_config.json"] = pretty_json(body)
    files["special_tokens_map.json"] = pretty_json(official.special_tokens_map_json(added, config))
    return files


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
    """Byte-level BPE trained on CORPUS to vocab_size − 3 entries; bos, pad and eos take the top ids, the other
    harmony tokens the ids of byte tokens that no UTF-8 text produces (gptoss_convert/tiny.py says why)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    top = {t: i for t, i in TINY_SPECIAL_TOKENS.items() if i >= config.vocab_size - 3}
    regular = config.vocab_size - len(top)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=regular, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(CORPUS.splitlines(), trainer)
    if tokenizer.get_vocab_size() != regular:
        raise RuntimeError(f"BPE training gave {tokenizer.get_vocab_size()} tokens, expected {regular}")
    for token, token_id in sorted(top.items(), key=lambda kv: kv[1]):
        tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False)])
        if tokenizer.token_to_id(token) != token_id:
            raise RuntimeError(f"{token} got id {tokenizer.token_to_id(token)}, expected {token_id}")
    return _harmony_tokens_on_unused_bytes(tokenizer, {t: i for t, i in TINY_SPECIAL_TOKENS.items() if t not in top})


def _harmony_tokens_on_unused_bytes(tokenizer, tokens: dict):
    """Give each of `tokens` the id of a byte token of UNUSED_BYTES_FOR_SPECIAL_TOKENS: the vocab entry is renamed
    (no merge reaches it from text) and the token added as special, matched before BPE runs."""
    from tokenizers import Tokenizer

    body = json.loads(tokenizer.to_str())
    vocab, merges = body["model"]["vocab"], body["model"]["merges"]
    # the byte-level alphabet writes bytes 0xAE..0xFF as the character of the same code point (GPT-2's byte map)
    for byte, (token, token_id) in zip(UNUSED_BYTES_FOR_SPECIAL_TOKENS, sorted(tokens.items(), key=lambda kv: kv[1])):
        char = chr(byte)
        if vocab.get(char) != token_id or any(char in "".join(m) for m in merges):
            raise RuntimeError(f"byte 0x{byte:02X} has id {vocab.get(char)} or a merge; expected id {token_id}, none")
        vocab[token] = vocab.pop(char)  # in the model's vocab, so the added token below keeps this id
        body["added_tokens"].append({"id": token_id, "content": token, "single_word": False, "lstrip": False,
                                     "rstrip": False, "normalized": False, "special": True})
    body["added_tokens"].sort(key=lambda entry: entry["id"])
    tokenizer = Tokenizer.from_str(json.dumps(body))
    wrong = {t: tokenizer.token_to_id(t) for t, i in tokens.items() if tokenizer.token_to_id(t) != i}
    if wrong:
        raise RuntimeError(f"special tokens got other ids than planned: {wrong}")
    return tokenizer


# ---- command line ----------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), required=True)
    parser.add_argument("--layers", type=int, help="override the layer count (disk-limited runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--layout", choices=("hf", "original", "both"), default="both")
    parser.add_argument("--max-shard-bytes", type=int, help="override the shard cap")
    parser.add_argument("--metadata-only", action="store_true",
                        help="every file but the weights: configs, index, tokenizer files, chat template, original/ json")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="force the progress bar on or off  [default: a bar on a terminal, else a line per ~10 s]")
    parser.add_argument("--quiet", action="store_true", help="no progress output (same as --no-progress)")
    args = parser.parse_args(argv)
    if args.layers is not None and args.layers < 1:
        parser.error("--layers must be at least 1")
    config = shape_config(args.shape, args.layers)
    tiny = args.shape == "tiny"
    max_shard = args.max_shard_bytes or (TINY_SHARD_BYTES if tiny else None)
    out = write_checkpoint(config, args.out, args.layout, args.seed, max_shard, tokenizer=tiny,
                           progress=False if args.quiet else args.progress, metadata_only=args.metadata_only,
                           hub=not tiny)
    total = sum(plan_checkpoint(config, name, max_shard, hub=not tiny).total_size for name in layouts_of(args.layout))
    what = "metadata only, no tensor data" if args.metadata_only else "bytes of tensors"
    print(f"wrote {out} ({args.shape}, {config.num_hidden_layers} layers, {args.layout} layout, {total:,} {what})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
