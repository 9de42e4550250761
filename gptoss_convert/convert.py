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
from dataclasses import dataclass
from pathlib import Path

import torch

from gptoss_model.io import (
    DTYPE_NAMES,
    INDEX_NAME,
    MAX_SHARD_BYTES,
    Shard,
    ShardWriter,
    TensorSpec,
    atomic_directory,
    index_json,
    one_based_shard_names,
    plan_shards,
    write_config,
)
from gptoss_convert.checkpoint import Checkpoint, open_checkpoint
from gptoss_convert.errors import InputError
from gptoss_convert.options import DTYPES
from gptoss_convert.remap import audit, iter_tensors, our_shapes
from gptoss_convert.sources import resolve_source

CAST_CHUNK_BYTES = 64 * 2**20  # float32 output is cast and written in row chunks of about this size


@dataclass(frozen=True)
class ConvertPlan:
    source: Path  # the directory the user named
    checkpoint: Checkpoint
    source_map: dict  # our name -> checkpoint source (the audited remap)
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
    source_map = audit(ckpt)
    dtype_name = DTYPE_NAMES[dtype]
    specs = [TensorSpec(name, dtype_name, shape) for name, shape in our_shapes(ckpt.config).items()]
    shards = plan_shards(specs, max_shard_bytes, one_based_shard_names)
    return ConvertPlan(source, ckpt, source_map, out, dtype, tuple(shards))


def format_plan(plan: ConvertPlan) -> str:
    """What a conversion would write (for --dry-run): the source, then one line per file, then the total."""
    lines = [f"source: {plan.checkpoint.describe()}",
             f"would write {plan.out} (gptoss_model format, {DTYPE_NAMES[plan.dtype]})"
             + (" (exists: needs --force)" if plan.out.exists() else "") + ":"]
    for shard in plan.shards:
        lines.append(f"  {shard.file}  {len(shard.tensors)} tensors  {shard.nbytes:,} bytes")
    lines.append(f"  {INDEX_NAME}, config.json" + "".join(f", {p.name}" for p in plan.checkpoint.side_files))
    lines.append(f"total: {plan.tensor_count} tensors in {len(plan.shards)} shard(s), {plan.total_size:,} bytes")
    return "\n".join(lines)


def convert(model: str | Path, out: str | Path, dtype: torch.dtype = torch.bfloat16, *, force: bool = False,
            progress: bool | None = True, max_shard_bytes: int = MAX_SHARD_BYTES, check_pins: bool = True) -> ConvertPlan:
    """Convert `model` (tiny, 20b, 120b or a directory) into `out`; returns the plan it carried out.

    Raises InputError (exit 2) if `out` exists without `force` or lies inside the checkpoint, IntegrityError
    (exit 3) for a damaged or inconsistent checkpoint, or a download of a pinned revision whose files differ from
    the pins (unless check_pins is false); either way nothing is left behind."""
    plan = plan_convert(model, out, dtype, max_shard_bytes)
    if check_pins:
        from gptoss_convert import pins
        from gptoss_convert.manifest import read_manifest

        pins.check_checkpoint(plan.checkpoint.root, read_manifest(plan.checkpoint.root), progress=progress)
    out = plan.out
    if (out.exists() or out.is_symlink()) and not force:
        raise InputError(f"--out {out} already exists; pass --force to replace it")
    blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise InputError(f"--out {out}: {blocker} is a file, not a directory; expected a directory path to write into")
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out)
        with atomic_directory(out) as temporary:
            _write(plan, temporary, progress)
    except BaseException as error:
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


def _write(plan: ConvertPlan, directory: Path, progress: bool | None) -> None:
    from gptoss_convert.progress import progress_bar

    ckpt = plan.checkpoint
    tensors = iter_tensors(ckpt, dtype=None, source_map=plan.source_map)  # checkpoint dtype; cast below in row chunks
    with progress_bar(total=plan.total_size, unit="B", desc="convert", enabled=progress) as bar:
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
    (directory / INDEX_NAME).write_text(json.dumps(index_json(list(plan.shards)), indent=2) + "\n")
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

