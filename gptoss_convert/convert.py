"""Streamed conversion of a gpt-oss checkpoint (any layout `checkpoint` reads) into gptoss_model's own format.

One tensor at a time: read (or dequantize one expert weight), check, cast in row chunks, append to the current
shard through the streaming writer. Peak memory is about the largest tensor (the 20b embedding, 1.2 GB in bf16),
whatever the model size. Everything is written into a temporary directory next to --out (`.NAME.tmp-PID-*`) and
renamed into place on success; on any failure (Ctrl-C included) the temporary directory is removed, and one left by
a killed run (SIGKILL, power loss) is removed by the next conversion to the same --out.
"""

import glob
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from gptoss_convert.checkpoint import INDEX_FILE, Checkpoint, open_checkpoint
from gptoss_convert.errors import InputError
from gptoss_convert.remap import audit, iter_tensors, our_shapes
from gptoss_convert.safetensors_writer import (
    DTYPE_NAMES,
    Shard,
    ShardWriter,
    TensorSpec,
    index_json,
    one_based_shard_names,
    plan_shards,
)

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
MAX_SHARD_BYTES = 2 * 1024**3  # same cap as GPTOssModelFull.save_pretrained
CAST_CHUNK_BYTES = 64 * 2**20  # float32 output is cast and written in row chunks of about this size


def resolve_source(model: str | Path) -> Path:
    """`tiny` -> the embedded checkpoint; `20b` / `120b` (or owner/name) -> its download directory; else a path."""
    if str(model) == "tiny":
        from gptoss_convert.tiny import tiny_checkpoint_dir

        return tiny_checkpoint_dir()
    path = Path(model).expanduser()
    if str(model) not in ("20b", "120b") and path.exists():
        if not path.is_dir():
            raise InputError(f"--model {model}: not a directory; expected tiny, 20b, 120b or a checkpoint directory")
        return path
    try:
        from gptoss_convert.hub import parse_model, resolve_model_dir
    except ImportError:
        raise InputError(
            f"--model {model}: not a directory, and downloads are unavailable in this install; run "
            f"`gptoss-convert download --model 20b` (or 120b) first, or pass a checkpoint directory"
        ) from None
    try:
        parse_model(str(model))
    except InputError:  # neither a directory nor a model name: say so, rather than talk about hub repo ids
        raise InputError(f"--model {model}: no such directory; expected tiny, 20b, 120b, a downloaded OWNER/NAME "
                         "or a checkpoint directory") from None
    return resolve_model_dir(str(model))


@dataclass(frozen=True)
class ConvertPlan:
    source: Path  # the directory the user named
    checkpoint: Checkpoint
    sources: dict  # our name -> checkpoint source (the audited remap)
    out: Path
    dtype: torch.dtype
    shards: tuple[Shard, ...]

    @property
    def total_size(self) -> int:
        return sum(s.nbytes for s in self.shards)

    @property
    def tensor_count(self) -> int:
        return sum(len(s.tensors) for s in self.shards)


def plan_convert(model: str | Path, out: str | Path, dtype: torch.dtype = torch.bfloat16,
                 max_shard_bytes: int = MAX_SHARD_BYTES) -> ConvertPlan:
    """Open and audit the checkpoint (headers only) and plan the output files. Writes nothing."""
    if dtype not in DTYPES.values():
        raise InputError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype}")
    source = resolve_source(model)
    ckpt = open_checkpoint(source)
    out = Path(out).expanduser()
    for inside in {source.resolve(), ckpt.root.resolve()}:
        if out.resolve().is_relative_to(inside):
            raise InputError(f"--out {out} is inside the checkpoint {inside}; choose a directory outside it")
        if inside.is_relative_to(out.resolve()):
            raise InputError(f"--out {out} contains the checkpoint {inside}; choose another directory")
    plan = audit(ckpt)
    name = DTYPE_NAMES[dtype]
    specs = [TensorSpec(n, name, shape) for n, shape in our_shapes(ckpt.config).items()]
    shards = plan_shards(specs, max_shard_bytes, one_based_shard_names)
    return ConvertPlan(source, ckpt, plan, out, dtype, tuple(shards))


def format_plan(plan: ConvertPlan) -> str:
    """What a conversion would write (for --dry-run): the source, then one line per file, then the total."""
    lines = [f"source: {plan.checkpoint.describe()}",
             f"would write {plan.out} (gptoss_model format, {DTYPE_NAMES[plan.dtype]})"
             + (" (exists: needs --force)" if plan.out.exists() else "") + ":"]
    for shard in plan.shards:
        lines.append(f"  {shard.file}  {len(shard.tensors)} tensors  {shard.nbytes:,} bytes")
    lines.append(f"  {INDEX_FILE}, config.json" + "".join(f", {p.name}" for p in plan.checkpoint.side_files))
    lines.append(f"total: {plan.tensor_count} tensors in {len(plan.shards)} shard(s), {plan.total_size:,} bytes")
    return "\n".join(lines)


def convert(model: str | Path, out: str | Path, dtype: torch.dtype = torch.bfloat16, *, force: bool = False,
            progress: bool = True, max_shard_bytes: int = MAX_SHARD_BYTES) -> ConvertPlan:
    """Convert `model` (tiny, 20b, 120b or a directory) into `out`; returns the plan it carried out.

    Raises InputError (exit 2) if `out` exists without `force` or lies inside the checkpoint, IntegrityError
    (exit 3) for a damaged or inconsistent checkpoint; either way nothing is left behind."""
    plan = plan_convert(model, out, dtype, max_shard_bytes)
    out = plan.out
    if (out.exists() or out.is_symlink()) and not force:
        raise InputError(f"--out {out} already exists; pass --force to replace it")
    blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise InputError(f"--out {out}: {blocker} is a file, not a directory; expected a directory path to write into")
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    tmp = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
        _umask = os.umask(0o022)
        os.umask(_umask)
        tmp.chmod(0o777 & ~_umask)  # mkdtemp makes it private; the result should look like a normal directory
        _write(plan, tmp, progress)
        if out.exists() or out.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=out.parent))
            try:
                os.replace(out, old / "previous")
            except BaseException:
                old.rmdir()
                raise
            try:
                os.replace(tmp, out)
            except BaseException:
                os.replace(old / "previous", out)  # the new output cannot go in: put the previous one back
                old.rmdir()
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException as error:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for folder in created:  # deepest first; only the ones this call made, and only if still empty
            try:
                folder.rmdir()
            except OSError:
                pass
        if isinstance(error, OSError):  # disk full, permission denied, ...: one line naming --out and the file
            where = f" ({error.filename})" if error.filename else ""
            raise InputError(f"--out {out}: cannot write{where}: {error.strerror or error}; nothing was written") from None
        raise
    return plan


_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)-[^/]*")


def remove_stale_temps(out: Path) -> list[Path]:
    """Remove the temporary directories (`.NAME.tmp-PID-*`, `.NAME.old-PID-*`) that a killed conversion to the same
    --out left beside it. Only those of processes no longer running are touched; returns what was removed."""
    removed = []
    for path in out.parent.glob(f".{glob.escape(out.name)}.*-*"):
        match = _TEMP_NAME.fullmatch(path.name)
        if match is None or match["name"] != out.name or not path.is_dir() or path.is_symlink():
            continue
        if _process_alive(int(match["pid"])):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _write(plan: ConvertPlan, directory: Path, progress: bool) -> None:
    from tqdm import tqdm

    from gptoss_model.io import write_config

    ckpt = plan.checkpoint
    tensors = iter_tensors(ckpt, dtype=None, plan=plan.sources)  # checkpoint dtype; cast below in row chunks
    with tqdm(total=plan.total_size, unit="B", unit_scale=True, desc="convert", file=sys.stderr,
              disable=not progress) as bar:
        for shard in plan.shards:
            with ShardWriter(directory / shard.file, shard.tensors) as writer:
                for spec in shard.tensors:
                    name, tensor = next(tensors)
                    if name != spec.name:  # internal invariant: the plan and the remap share one order
                        raise RuntimeError(f"convert: expected {spec.name}, got {name}")
                    for chunk in _cast_chunks(tensor, plan.dtype):
                        writer.write(name, chunk)
                        bar.update(chunk.numel() * chunk.element_size())
                    del tensor
    index = index_json(list(plan.shards))
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    extra = {k: v for k, v in ckpt.config.extra.items() if k != "quantization_config"}  # ours is never quantized
    write_config(directory, ckpt.config.replace(extra=extra))
    for side in ckpt.side_files:
        shutil.copyfile(side, directory / side.name)


def _cast_chunks(tensor: torch.Tensor, dtype: torch.dtype):
    if tensor.dtype == dtype or tensor.dim() == 0:
        yield tensor.to(dtype)
        return
    rows = max(1, CAST_CHUNK_BYTES // max(1, tensor[0].numel() * dtype.itemsize))
    for part in tensor.split(rows):
        yield part.to(dtype)


def load_model(source: str | Path = "tiny", dtype: torch.dtype | str | None = None, device="cpu",
               experts: str = "dequantized"):
    """Build a GPTOssModelFull from `source` (tiny, a downloaded 20b/120b, or a directory in any supported layout),
    with parameters in `dtype` (default float32) on `device`. `experts="mxfp4"` keeps the expert weights packed
    (gptoss_model.mxfp4_experts.MXFP4Experts, filled by gptoss_convert/packed.py): 20b then takes ~13.8 GB.

    The model is built on the meta device (no memory, no random init), then each parameter is replaced by the
    tensor read from the checkpoint, one at a time, so peak memory is the model's own size plus one tensor."""
    from gptoss_convert.packed import check_experts_option, fill_packed, split_plan
    from gptoss_model import GPTOssModelFull

    check_experts_option(experts)
    dtype = _as_dtype(dtype)
    device = _as_device(device)
    ckpt = open_checkpoint(resolve_source(source))
    plan, packed_plan = audit(ckpt), {}
    with torch.device("meta"):
        model = GPTOssModelFull(ckpt.config, device="meta", dtype=dtype)
    if experts == "mxfp4":
        from gptoss_model.mxfp4_experts import use_packed_experts

        use_packed_experts(model)
        plan, packed_plan = split_plan(plan)
        fill_packed(model, ckpt, packed_plan, device)
    for name, tensor in iter_tensors(ckpt, dtype=dtype, plan=plan, owned=True):  # owned: not the file's mmap
        module_name, _, leaf = name.rpartition(".")
        module = model.get_submodule(module_name)
        requires_grad = getattr(module, leaf).requires_grad
        setattr(module, leaf, torch.nn.Parameter(tensor.to(device), requires_grad=requires_grad))
        del tensor
    model.model.rotary_emb = type(model.model.rotary_emb)(ckpt.config, device=device)  # built on meta above
    unfilled = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if unfilled:  # internal invariant: the remap covers every parameter
        raise RuntimeError(f"load_model left {len(unfilled)} tensors unfilled, first {unfilled[0]}")
    return model.eval()


def _as_dtype(dtype) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        return DTYPES[dtype]
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise InputError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
    return dtype


def _as_device(device) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device {device!r}: not a torch device; expected 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {str(device)!r}: no CUDA device is available; expected 'cpu'")
    return device
