"""gptoss_model's own on-disk format, and the file chores every writer in the project shares (docs/design.md,
"Our format"). The sole owner of:

- the format: config.json `{"format": "gptoss_model", "format_version": 1, "config": {...}}` + sharded safetensors
  + `model.safetensors.index.json`, with ONE version check (`check_format`);
- shard planning and shard names (`plan_shards`, `one_based_shard_names`, `zero_based_shard_names`);
- the streaming safetensors writer (`ShardWriter`), so big checkpoints are written one tensor or row chunk at a time;
- atomic writes: `atomic_write_text` for one file, `atomic_directory` for a whole directory (temp path + fsync +
  rename);
- the byte-unit formatter (`format_bytes`, decimal units: 1 GB = 10⁹ bytes);
- the meta-model filler (`fill_meta_model`): a model built on the meta device gets its tensors one at a time.

Reading the official hub layouts is gptoss_convert's job; this module knows only our format and safetensors itself.
"""

import contextlib
import json
import math
import os
import secrets
import shutil
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from gptoss_model.config import GPTOssConfig

FORMAT_NAME = "gptoss_model"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
INDEX_NAME = "model.safetensors.index.json"
MAX_SHARD_BYTES = 2 * 1024**3  # the default shard cap of save_pretrained and convert

# ---------------------------------------------------------------------------------------------------------------
# Byte units


def format_bytes(n: float) -> str:
    """A byte count for people, in decimal units (kB = 1000 B, as disks and the hub count): "13.80 GB"."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000


# ---------------------------------------------------------------------------------------------------------------
# Atomic writes: write beside the target, fsync, rename (a reader never sees a half-written file)


def write_temp_beside(target: Path, text: str) -> Path:
    """Write `text` to a fresh, fsync'd temporary file beside `target` (same filesystem, so a later os.replace is
    atomic) and return its path. Several of these can be renamed into place together (see gptoss_convert's
    reports); on failure the temporary file is removed."""
    target = Path(target)
    temp = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def atomic_write_text(target, text: str) -> None:
    """Replace `target` with `text` all at once: temp file beside it, fsync, rename."""
    target = Path(target)
    temp = write_temp_beside(target, text)
    try:
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def atomic_write_with(target, write) -> Path:
    """Replace `target` with the file `write(temp_path)` produces (a library writer: safetensors, an image): temp
    file beside it, fsync, rename. On any error the temporary file is removed and `target` is untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        write(str(temp))
        with open(temp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target


@contextlib.contextmanager
def atomic_directory(target):
    """Yield a fresh temporary directory `.NAME.tmp-PID-*` beside `target`; when the block ends without error its
    files are fsync'd and it is renamed to `target`. An existing `target` is first moved aside (`.NAME.old-PID-*`)
    and put back if the rename fails, then removed. On any error (Ctrl-C included) the temporary directory is
    removed and `target` is untouched. The PID in the names lets a later run recognise what a killed one left."""
    target = Path(target)
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    try:
        umask = os.umask(0o022)
        os.umask(umask)
        temp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result should look like a normal directory
        yield temp
        _fsync_tree(temp)
        _swap_into_place(temp, target)
        _fsync_directory(target.parent)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def _swap_into_place(temp: Path, target: Path) -> None:
    if not (target.exists() or target.is_symlink()):
        os.replace(temp, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{os.getpid()}-", dir=target.parent))
    try:
        os.replace(target, old / "previous")
    except BaseException:
        old.rmdir()
        raise
    try:
        os.replace(temp, target)
    except BaseException:
        os.replace(old / "previous", target)  # the new one cannot go in: put the previous one back
        old.rmdir()
        raise
    shutil.rmtree(old, ignore_errors=True)


def _fsync_tree(directory: Path) -> None:
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------------------------
# config.json and the one format-version check


def write_config(directory, config: GPTOssConfig) -> None:
    """config.json into `directory`, a plain write: callers write into `atomic_directory`'s temporary directory."""
    body = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config": config.to_dict()}
    (Path(directory) / CONFIG_NAME).write_text(json.dumps(body, indent=2) + "\n")


def check_format(body: dict, path) -> dict:
    """The one check of our config.json: `body` (its parsed JSON, read from `path`) -> the "config" object.
    ValueError naming `path` when the format, its version or the config object is not what we write."""
    if not isinstance(body, dict) or body.get("format") != FORMAT_NAME:
        raise ValueError(f'{path}: not a {FORMAT_NAME} config (no "format": "{FORMAT_NAME}")')
    if body.get("format_version") != FORMAT_VERSION or not isinstance(body.get("config"), dict):
        raise ValueError(f"{path}: expected format_version {FORMAT_VERSION} and a 'config' object, "
                         f"found {body.get('format_version')!r}")
    return body["config"]


def read_config(directory) -> GPTOssConfig:
    path = Path(directory) / CONFIG_NAME
    return GPTOssConfig.from_dict(check_format(json.loads(path.read_text()), path))


def is_model_dir(directory) -> bool:
    try:
        return json.loads((Path(directory) / CONFIG_NAME).read_text()).get("format") == FORMAT_NAME
    except (OSError, ValueError, AttributeError):
        return False


# ---------------------------------------------------------------------------------------------------------------
# Shards: the plan, the names, the index, and a streaming safetensors writer
#
# A safetensors file: an 8-byte little-endian header length N, N bytes of JSON mapping each tensor name to
# {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the end of the header, contiguous, in order),
# padded with spaces to a multiple of 8, then the raw little-endian bytes of every tensor in offset order. The header
# is written first from a plan (`TensorSpec`s), so the data can then be streamed; the writer checks that every chunk
# has the planned dtype and that exactly the planned number of bytes arrives for every tensor.

# safetensors dtype spelling <-> torch dtype, and bytes per element.
DTYPE_NAMES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
TORCH_DTYPES = {name: dtype for dtype, name in DTYPE_NAMES.items()}
DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
HEADER_ALIGN = 8  # the JSON header is padded with spaces so the data starts 8-byte aligned


@dataclass(frozen=True)
class TensorSpec:
    """One tensor as planned: its name, safetensors dtype ("BF16", "U8", ...) and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_SIZES[self.dtype]


@dataclass(frozen=True)
class Shard:
    """One planned file: its name and the tensors it holds, in write order."""

    file: str
    tensors: tuple[TensorSpec, ...]

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def zero_based_shard_names(count: int) -> list[str]:
    """The hub's gpt-oss naming: model-00000-of-00002 ... model-00002-of-00002 (`-of-` the last index)."""
    return [f"model-{i:05d}-of-{count - 1:05d}.safetensors" for i in range(count)]


def one_based_shard_names(count: int) -> list[str]:
    """Transformers' usual naming, used by our own format: model-00001-of-00003 ... model-00003-of-00003."""
    return [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]


def plan_shards(specs: list[TensorSpec], max_shard_bytes: int, naming=one_based_shard_names) -> list[Shard]:
    """Split tensors, in order, into files of at most `max_shard_bytes` (greedy: a tensor that would overflow the
    current file starts the next one; a tensor larger than the cap gets a file of its own)."""
    groups: list[list[TensorSpec]] = [[]]
    size = 0
    for spec in specs:
        if groups[-1] and size + spec.nbytes > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(spec)
        size += spec.nbytes
    names = naming(len(groups))
    return [Shard(name, tuple(group)) for name, group in zip(names, groups)]


def index_json(shards: list[Shard], metadata: dict | None = None) -> dict:
    """The `model.safetensors.index.json` content: metadata.total_size (bytes of tensor data) and a sorted
    weight_map."""
    weight_map = {t.name: shard.file for shard in shards for t in shard.tensors}
    total = {"total_size": sum(shard.nbytes for shard in shards)}
    return {"metadata": {**total, **(metadata or {})}, "weight_map": dict(sorted(weight_map.items()))}


def encode_header(specs: list[TensorSpec], metadata: dict | None = None, *, with_metadata: bool = True) -> bytes:
    """The 8-byte length + padded JSON header for tensors stored contiguously in the given order (without
    `__metadata__` when with_metadata is false, as the hub's gpt-oss shards are)."""
    header: dict = {"__metadata__": {"format": "pt", **(metadata or {})}} if with_metadata else {}
    offset = 0
    for spec in specs:
        header[spec.name] = {"dtype": spec.dtype, "shape": list(spec.shape), "data_offsets": [offset, offset + spec.nbytes]}
        offset += spec.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % HEADER_ALIGN)
    return struct.pack("<Q", len(text)) + text


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The raw little-endian bytes of a tensor (no copy when it is already contiguous)."""
    if sys.byteorder != "little":
        raise RuntimeError("the safetensors writer supports little-endian machines only")
    flat = tensor.detach().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


class ShardWriter:
    """Writes one safetensors file from a plan. Use as a context manager; call `write(name, chunk)` for the planned
    tensors in order, each as one tensor or as several chunks of leading-dimension rows."""

    def __init__(self, path: str | Path, specs: list[TensorSpec] | tuple[TensorSpec, ...], metadata: dict | None = None,
                 *, with_metadata: bool = True):
        self.path = Path(path)
        self.specs = list(specs)
        self._file = open(self.path, "wb")
        self._file.write(encode_header(self.specs, metadata, with_metadata=with_metadata))
        self._current = 0  # index of the tensor being written
        self._written = 0  # bytes of it written so far

    def write(self, name: str, chunk: torch.Tensor) -> None:
        while self._current < len(self.specs) and self.specs[self._current].nbytes == 0:
            self._current += 1  # empty tensors have no bytes to wait for
        if self._current >= len(self.specs):
            raise ValueError(f"{self.path.name}: {name} written after every planned tensor")
        spec = self.specs[self._current]
        if name != spec.name:
            raise ValueError(f"{self.path.name}: expected tensor {spec.name} next, got {name}")
        if DTYPE_NAMES.get(chunk.dtype) != spec.dtype:
            raise ValueError(f"{self.path.name}: {name} planned as {spec.dtype}, got {chunk.dtype}")
        data = tensor_bytes(chunk)
        if self._written + data.nbytes > spec.nbytes:
            raise ValueError(f"{self.path.name}: {name} gets more than its planned {spec.nbytes} bytes")
        self._file.write(data)
        self._written += data.nbytes
        if self._written == spec.nbytes:
            self._current += 1
            self._written = 0

    def close(self) -> None:
        if self._file.closed:
            return
        self._file.close()
        while self._current < len(self.specs) and self.specs[self._current].nbytes == 0:
            self._current += 1
        if self._current != len(self.specs):
            missing = self.specs[self._current].name
            raise ValueError(f"{self.path.name}: closed before {missing} was completely written")

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._file.close()


# ---------------------------------------------------------------------------------------------------------------
# A whole model: save, and load through the meta-model filler


def save_model(model, directory, max_shard_bytes: int = MAX_SHARD_BYTES) -> None:
    """config.json + shards + index into `directory`, through `atomic_directory`, one tensor at a time."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    specs = [TensorSpec(name, DTYPE_NAMES[t.dtype], tuple(t.shape)) for name, t in state.items()]
    shards = plan_shards(specs, max_shard_bytes)
    with atomic_directory(directory) as temp:
        for shard in shards:
            with ShardWriter(temp / shard.file, shard.tensors) as writer:
                for spec in shard.tensors:
                    writer.write(spec.name, state[spec.name].detach().cpu())
        (temp / INDEX_NAME).write_text(json.dumps(index_json(shards), indent=2) + "\n")
        write_config(temp, model.config)


def fill_meta_model(model, tensors, device="cpu", source="") -> None:
    """Give a model built on the meta device its tensors, one at a time, so peak memory is the model plus one tensor.

    tensors: (parameter name, tensor) pairs; each replaces its meta parameter, moved to `device`. The rotary
    buffers (computed, never stored) are then rebuilt on `device`. ValueError, naming `source`, for an unexpected
    or misshapen tensor, or for a parameter nothing filled."""
    expected = dict(model.named_parameters())
    for name, tensor in tensors:
        if name not in expected:
            raise ValueError(f"{source}: unexpected tensor {name!r}")
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ValueError(f"{source}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                             f"expected {tuple(expected[name].shape)}")
        module_name, _, leaf = name.rpartition(".")
        parameter = torch.nn.Parameter(tensor.to(device), requires_grad=expected[name].requires_grad)
        setattr(model.get_submodule(module_name), leaf, parameter)
    for module_name, module in list(model.named_modules()):
        if any(b.is_meta for b in module.buffers(recurse=False)):  # the rotary embedding's inverse frequencies
            parent_name, _, leaf = module_name.rpartition(".")
            setattr(model.get_submodule(parent_name), leaf, type(module)(model.config, device=device))
    missing = [name for name, p in model.named_parameters() if p.is_meta]
    if missing:
        more = " ..." if len(missing) > 5 else ""
        raise ValueError(f"{source}: missing tensors {', '.join(missing[:5])}{more}")


def load_model_dir(cls, directory, dtype=None, device="cpu"):
    """Build `cls` on the meta device (no memory, no random init), then fill it shard by shard."""
    from safetensors import safe_open

    directory = Path(directory)
    config = read_config(directory)
    index = json.loads((directory / INDEX_NAME).read_text())
    with torch.device("meta"):
        model = cls(config, device="meta")

    def tensors():
        for file in sorted(set(index["weight_map"].values())):
            with safe_open(str(directory / file), framework="pt", device="cpu") as f:
                for name in f.keys():
                    tensor = f.get_tensor(name)
                    yield name, tensor.to(dtype or tensor.dtype)

    fill_meta_model(model, tensors(), device=device, source=str(directory))
    return model
