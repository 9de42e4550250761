"""A streaming safetensors writer, so big checkpoints are written one tensor (or one row chunk) at a time.

`safetensors.torch.save_file` needs the whole state dict in memory; a 20b shard is ~4.8 GB. The format is simple
enough to write directly: an 8-byte little-endian header length N, N bytes of JSON mapping each tensor name to
{"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the end of the header, contiguous, in order),
padded with spaces to a multiple of 8, then the raw little-endian bytes of every tensor in offset order.

The header is written first from a plan (`TensorSpec`s), so the data can then be streamed; the writer checks that
every chunk has the planned dtype and that exactly the planned number of bytes arrives for every tensor.
"""

import json
import math
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

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
