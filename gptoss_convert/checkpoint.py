"""Lazy, validating reader of gpt-oss checkpoints in every layout we support (docs/checkpoints.md).

Layouts (detected from the files, never from the directory name):
- "hf": the hub's root layout — `config.json` (Transformers keys, usually with `quantization_config`) and either
  `model.safetensors.index.json` + shards or a single `model.safetensors`; experts either MXFP4
  (`*_blocks`/`*_scales`, U8) or dense (`gate_up_proj` [E, H, 2I], `down_proj` [E, I, H], as Transformers'
  dequantized `GptOssExperts` saves them).
- "original": OpenAI's `original/` layout — `config.json` with exactly the 16 `ModelConfig` keys, `block.N.*` names,
  fused qkv; one `model.safetensors`, or shards with or without an index. Given either the `original/` directory or
  a directory holding it (when that directory has no HF weights of its own).
- "gptoss_model": our own format (what `convert` and `GPTOssModelFull.save_pretrained` write).

Only headers are read up front: the name -> (file, dtype, shape) index is built from them, and every header is
validated (length, JSON, dtypes, shapes, offsets, file size) before any tensor is touched. Tensors are then read
one at a time through `safetensors.safe_open`. Nothing here unpickles anything.
"""

import hashlib
import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from gptoss_model.config import GPTOssConfig
from gptoss_model.io import DTYPE_SIZES, INDEX_NAME, TORCH_DTYPES
from gptoss_convert.config_files import config_from_original, hf_config, own_config, read_json
from gptoss_convert.errors import InputError, IntegrityError

INDEX_FILE = INDEX_NAME
SINGLE_FILE = "model.safetensors"
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit; a real 20b shard header is ~100 KB
SIDE_FILES = ("generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "chat_template.jinja")

# ---- safetensors headers -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: its file, safetensors dtype, shape and byte range (relative to the data start)."""

    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int
    data_start: int = 0  # file offset of the data section (8 + header length)

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Parse and validate one safetensors header without reading tensor data. Raises IntegrityError naming the file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise IntegrityError(f"{path}: truncated: {size} bytes, expected at least the 8-byte header length")
            (length,) = struct.unpack("<Q", prefix)
            if length > MAX_HEADER_BYTES or 8 + length > size:
                raise IntegrityError(
                    f"{path}: header length {length} runs past the end of the file ({size} bytes): truncated or not safetensors"
                )
            raw = f.read(length)
    except OSError as error:
        raise IntegrityError(f"{path}: cannot read ({error.strerror or error})") from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IntegrityError(f"{path}: header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise IntegrityError(f"{path}: header must be a JSON object, found {type(header).__name__}")
    data_size = size - 8 - length
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        tensors[name] = _tensor_info(path, name, entry, 8 + length)
    expected_start, previous = 0, None
    for info in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if info.begin < expected_start:
            raise IntegrityError(f"{path}: {info.name} data_offsets [{info.begin}, {info.end}] overlap those of "
                                 f"{previous.name} [{previous.begin}, {previous.end}]")
        if info.begin > expected_start:
            raise IntegrityError(f"{path}: {info.name} data_offsets start at {info.begin}, expected {expected_start} "
                                 "(a gap in the data)")
        expected_start, previous = info.end, info
    if expected_start > data_size:
        raise IntegrityError(
            f"{path}: tensor data ends at byte {expected_start} but the file holds {data_size} data bytes (truncated)"
        )
    if expected_start < data_size:
        raise IntegrityError(f"{path}: {data_size - expected_start} unexpected bytes after the last tensor")
    return tensors


def _tensor_info(path: Path, name: str, entry, data_start: int) -> TensorInfo:
    if not isinstance(entry, dict):
        raise IntegrityError(f"{path}: header entry for {name} must be an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_SIZES:
        raise IntegrityError(f"{path}: {name} has unsupported dtype {dtype!r}, expected one of {', '.join(DTYPE_SIZES)}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise IntegrityError(f"{path}: {name} has invalid shape {shape!r}")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise IntegrityError(f"{path}: {name} has invalid data_offsets {offsets!r}")
    nbytes = math.prod(shape) * DTYPE_SIZES[dtype]
    if offsets[1] - offsets[0] != nbytes:
        raise IntegrityError(
            f"{path}: {name} data_offsets span {offsets[1] - offsets[0]} bytes, expected {nbytes} for {dtype} {shape}"
        )
    return TensorInfo(name, path, dtype, tuple(shape), offsets[0], offsets[1], data_start)


def file_sha256(path: Path, chunk_bytes: int = 16 * 2**20) -> str:
    """Hex sha256 of a file, streamed in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


# ---- files inside a checkpoint directory ---------------------------------------------------------------------------

def _member(root: Path, name: str, named_by: Path) -> Path:
    """Resolve a file named by an index inside `root`, refusing anything that leaves it."""
    if not isinstance(name, str) or not name:
        raise IntegrityError(f"{named_by}: weight_map file names must be non-empty strings, found {name!r}")
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or "\\" in name or Path(name).is_absolute():
        raise IntegrityError(f"{named_by}: weight_map names {name!r}, a path outside {root}; expected a file inside it")
    path = root / rel
    if not path.is_file():
        found = "is not a regular file" if path.exists() else "does not exist"
        raise IntegrityError(f"{named_by}: weight_map names {name}, but {path} {found}")
    _check_inside(root, path, named_by)
    return path


def _check_inside(root: Path, path: Path, named_by: Path) -> None:
    real, real_root = path.resolve(), root.resolve()
    if real.is_relative_to(real_root) or _in_hub_blobs(real_root, real):
        return
    raise IntegrityError(f"{named_by}: {path.name} is a symlink to {real}, outside the checkpoint directory {root}")


def _in_hub_blobs(real_root: Path, real: Path) -> bool:
    # A Hugging Face cache snapshot (models--org--name/snapshots/<rev>[/original]) links every file into the
    # sibling blobs/ directory of the same repository; that is the one place outside `root` we accept.
    for parent in (real_root, *real_root.parents):
        if parent.parent.name == "snapshots":
            return real.is_relative_to(parent.parent.parent / "blobs")
    return False


def _has_hf_weights(directory: Path) -> bool:
    return (directory / INDEX_FILE).is_file() or (directory / SINGLE_FILE).is_file()


def _is_original_config(directory: Path) -> bool:
    path = directory / "config.json"
    if not path.is_file():
        return False
    config = read_json(path)
    return "num_experts" in config and "model_type" not in config


# ---- the checkpoint ------------------------------------------------------------------------------------------------

@dataclass
class Checkpoint:
    """An opened checkpoint: where it is, its layout, its config and the header index of its tensors."""

    root: Path  # the directory holding the weights (for "original" the original/ directory itself)
    layout: str  # "hf" | "original" | "gptoss_model"
    config: GPTOssConfig
    tensors: dict[str, TensorInfo]
    files: list[Path]
    index_file: Path | None = None
    side_files: list[Path] = field(default_factory=list)  # tokenizer / generation config found beside the weights

    @property
    def experts(self) -> str:
        """How expert weights are stored: "mxfp4" (blocks/scales) or "dense"."""
        return "mxfp4" if any(n.endswith(("_blocks", ".blocks")) for n in self.tensors) else "dense"

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    def describe(self) -> str:
        return (f"{self.root} ({self.layout} layout, {self.experts} experts, {len(self.files)} file(s), "
                f"{len(self.tensors)} tensors, {self.total_bytes:,} bytes)")

    def get(self, name: str):
        """Read one tensor (a new CPU tensor; the file is mapped only while it is copied)."""
        from safetensors import SafetensorError, safe_open

        info = self.tensors.get(name)
        if info is None:
            raise IntegrityError(f"{self.root}: no tensor named {name}")
        try:
            with safe_open(info.file, framework="pt") as f:
                tensor = f.get_tensor(name)
        except (SafetensorError, OSError, RuntimeError) as error:
            raise IntegrityError(f"{info.file}: cannot read {name} ({error})") from None
        if tuple(tensor.shape) != info.shape or tensor.dtype != TORCH_DTYPES[info.dtype]:
            raise IntegrityError(f"{info.file}: {name} read back as {tensor.dtype} {list(tensor.shape)}, header says {info.dtype} {list(info.shape)}")
        return tensor

    def read(self, name: str):
        """Read one tensor into fresh memory with plain positioned reads (no memory map), at the byte range the
        validated header gives. What `load_model` uses: resident memory is then the tensor itself, nothing more."""
        import torch

        info = self.tensors.get(name)
        if info is None:
            raise IntegrityError(f"{self.root}: no tensor named {name}")
        out = torch.empty(info.nbytes, dtype=torch.uint8)
        try:
            with open(info.file, "rb") as f:
                f.seek(info.data_start + info.begin)
                view, done = memoryview(out.numpy()), 0
                while done < info.nbytes and (n := f.readinto(view[done:])):
                    done += n
        except OSError as error:
            raise IntegrityError(f"{info.file}: cannot read {name} ({error.strerror or error})") from None
        if done != info.nbytes:
            raise IntegrityError(f"{info.file}: {name} ends early: read {done} of {info.nbytes} bytes (truncated?)")
        return out.view(TORCH_DTYPES[info.dtype]).reshape(info.shape)

    def sha256s(self) -> dict[str, str]:
        """sha256 of every weight file, keyed by its path relative to `root` (streamed; slow for big checkpoints)."""
        return {str(path.relative_to(self.root)): file_sha256(path) for path in self.files}


def open_checkpoint(path: str | Path, layout: str | None = None) -> Checkpoint:
    """Open a checkpoint directory, detecting its layout (or forcing `layout`), and validate every header.

    Detection: config.json with "format": "gptoss_model" -> ours; config.json and HF weights at the root -> "hf";
    config.json with OpenAI keys -> "original"; otherwise an `original/` subdirectory -> "original".
    """
    directory = Path(path)
    if not directory.is_dir():
        raise InputError(f"{directory}: not a directory; expected a checkpoint directory (config.json + *.safetensors)")
    detected = layout or _detect(directory)
    if detected == "original" and not _is_original_config(directory) and (directory / "original").is_dir():
        directory = directory / "original"
    if detected == "hf":
        return _open_hf(directory, layout="hf", config=hf_config(directory))
    if detected == "gptoss_model":
        return _open_hf(directory, layout="gptoss_model", config=own_config(directory))
    if detected == "original":
        return _open_original(directory)
    raise InputError(f"layout must be 'hf', 'original' or 'gptoss_model', got {detected!r}")


def _detect(directory: Path) -> str:
    config_path = directory / "config.json"
    if not config_path.is_file() and (config_path.exists() or _has_hf_weights(directory)):
        # weights without their config: never fall back to original/ (that would convert other files silently)
        found = "not a regular file" if config_path.exists() else "missing"
        raise InputError(f"{config_path}: {found}; expected the checkpoint's config.json (a JSON object) beside its weights")
    if config_path.is_file():
        config = read_json(config_path)
        if config.get("format") == "gptoss_model":
            return "gptoss_model"
        if "num_experts" in config and "model_type" not in config:
            return "original"
        if _has_hf_weights(directory):
            return "hf"
    if (directory / "original" / "config.json").is_file():
        return "original"
    if config_path.is_file():
        raise InputError(f"{directory}: config.json but no weights; expected {INDEX_FILE} or {SINGLE_FILE}")
    raise InputError(
        f"{directory}: no checkpoint found; expected config.json with {INDEX_FILE} or {SINGLE_FILE} (HF layout), "
        "or original/config.json (OpenAI layout)"
    )


def _open_hf(directory: Path, layout: str, config: GPTOssConfig) -> Checkpoint:
    index_path = directory / INDEX_FILE
    if index_path.is_file():
        files, tensors = _read_indexed(directory, index_path, check_total=(layout == "hf"))
    elif (directory / SINGLE_FILE).is_file():
        single = directory / SINGLE_FILE
        _check_inside(directory, single, single)
        files, tensors, index_path = [single], read_header(single), None
    else:
        raise InputError(f"{directory}: no weights; expected {INDEX_FILE} or {SINGLE_FILE}")
    side = [directory / name for name in SIDE_FILES if (directory / name).is_file()]
    return Checkpoint(directory, layout, config, tensors, files, index_path, side)


def _open_original(directory: Path) -> Checkpoint:
    config_path = directory / "config.json"
    config = config_from_original(read_json(config_path), str(config_path))
    parent = directory.parent
    if directory.name == "original" and _has_hf_weights(parent) and (parent / "config.json").is_file():
        # original/config.json carries no token ids; the HF config of the same repo does.
        hf = hf_config(parent)
        config = config.replace(bos_token_id=hf.bos_token_id, eos_token_id=hf.eos_token_id, pad_token_id=hf.pad_token_id)
    index_path = directory / INDEX_FILE
    if index_path.is_file():
        files, tensors = _read_indexed(directory, index_path, check_total=False)
    else:
        # OpenAI's loader reads every *.safetensors in the directory.
        files = sorted(directory.glob("*.safetensors"))
        if not files:
            raise IntegrityError(f"{directory}: original layout without weights; expected model.safetensors")
        tensors = {}
        for file in files:
            _check_inside(directory, file, file)
            for name, info in read_header(file).items():
                if name in tensors:
                    raise IntegrityError(f"{file}: {name} is also in {tensors[name].file.name}; expected each tensor once")
                tensors[name] = info
        index_path = None
    side = [parent / name for name in SIDE_FILES if (parent / name).is_file()] if directory.name == "original" else []
    return Checkpoint(directory, "original", config, tensors, files, index_path, side)


def _read_indexed(directory: Path, index_path: Path, check_total: bool) -> tuple[list[Path], dict[str, TensorInfo]]:
    index = read_json(index_path, error=IntegrityError)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise IntegrityError(f"{index_path}: expected a non-empty 'weight_map' object")
    unnamed = next((name for name, file in weight_map.items() if not isinstance(file, str) or not file), None)
    if unnamed is not None:
        raise IntegrityError(f"{index_path}: weight_map entry {unnamed!r} must name a file, found "
                             f"{weight_map[unnamed]!r}")
    files = []
    for name in dict.fromkeys(weight_map.values()):  # unique, in first-seen order
        files.append(_member(directory, name, index_path))
    files.sort(key=lambda p: p.name)
    tensors: dict[str, TensorInfo] = {}
    for file in files:
        for name, info in read_header(file).items():
            listed = weight_map.get(name)
            if listed is None:
                raise IntegrityError(f"{file}: holds {name}, which {index_path.name} does not list")
            if PurePosixPath(listed) != PurePosixPath(file.relative_to(directory).as_posix()):
                raise IntegrityError(f"{file}: holds {name}, which {index_path.name} places in {listed}")
            tensors[name] = info
    absent = [name for name in weight_map if name not in tensors]
    if absent:
        raise IntegrityError(
            f"{index_path}: {absent[0]} is listed in {weight_map[absent[0]]} but that file does not hold it"
            + (f" (and {len(absent) - 1} more)" if len(absent) > 1 else "")
        )
    total = (index.get("metadata") or {}).get("total_size") if isinstance(index.get("metadata"), dict) else None
    actual = sum(t.nbytes for t in tensors.values())
    if check_total and isinstance(total, int) and total != actual:
        raise IntegrityError(f"{index_path}: metadata.total_size is {total:,} but the shards hold {actual:,} bytes of tensors")
    return files, tensors
