"""Benchmark MXFP4 dequantization: gptoss_convert.mxfp4.dequantize vs Transformers' convert_moe_packed_tensors.

One 20b layer's gate_up_proj by default: blocks [32, 5760, 90, 16] uint8, scales [32, 5760, 90] uint8 (random
bytes; scales 127±8, a realistic spread), bf16 output. Both run in the same process on the same inputs; each is
warmed up once, then the rows are timed in turn for `--repeats` rounds (median reported), so a load that comes and
goes on a shared machine falls on all of them alike. The outputs are checked bit-identical first, allowing for
orientation: Transformers returns [E, in, out] (it transposes), we return the checkpoint's [E, out, in].

Rows timed (bf16 output):
  transformers                convert_moe_packed_tensors as Transformers calls it: [E, in, out], its transpose included
  transformers, no transpose  the same function on blocks viewed [E*out, 1, G, 16]: its transpose(1, 2) then swaps
                              a size-1 dim, a no-op, so this is its dequantization alone, in our orientation
  ours                        dequantize(), fresh output, [E, out, in] (the checkpoint's orientation, what we use)
  ours, out= reused           dequantize(..., out=buf): no fresh memory, so no page faults on the output
  ours + transpose            ours, then .transpose(1, 2).contiguous(): Transformers' orientation
Fresh 1 GB outputs pay for page faults, which on a small VM can cost more than the dequantization itself.

Usage (with the package installed, as `make setup` does; elsewhere prefix PYTHONPATH=.):
  .venv/bin/python scripts/bench_dequant.py [--repeats 5] [--threads N] [--shape 32 5760 90] [--device cpu]
                                            [--markdown]
"""

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from gptoss_convert.mxfp4 import dequantize


def interleaved(fns: dict, repeats: int, sync) -> dict:
    """Median wall time of each function over `repeats` rounds, after one warm-up call each. Rounds run the functions
    in turn, so a load that comes and goes on a shared machine falls on all of them alike. Results are dropped.
    `sync` waits for queued device work (torch.cuda.synchronize on CUDA)."""
    for fn in fns.values():
        fn()
    times = {label: [] for label in fns}
    for _ in range(repeats):
        for label, fn in fns.items():
            sync()
            start = time.perf_counter()
            result = fn()
            sync()
            times[label].append(time.perf_counter() - start)
            del result
    return {label: statistics.median(ts) for label, ts in times.items()}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor() or "unknown CPU")
    mem = next((line.split()[1] for line in _read("/proc/meminfo") if line.startswith("MemTotal")), None)
    mem_text = f"{int(mem) / 2**20:.1f} GiB RAM" if mem else "RAM unknown"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{os.cpu_count()} CPUs ({cpu}), torch threads {torch.get_num_threads()}, {mem_text}, {gpu}, "
            f"torch {torch.__version__}, transformers {_transformers_version()}, Python {platform.python_version()}")


def _read(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[32, 5760, 90], metavar=("E", "OUT", "G"),
                        help="blocks shape without the trailing 16 (default: 20b gate_up_proj, 32 5760 90)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per row after one warm-up (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--device", default="cpu", help="where the inputs live and the work runs (default cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", action="store_true", help="also print the result as markdown for docs/")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    e, o, g = args.shape
    gen = torch.Generator().manual_seed(args.seed)
    blocks = torch.randint(0, 256, (e, o, g, 16), dtype=torch.uint8, generator=gen)
    scales = torch.randint(127 - 8, 127 + 8 + 1, (e, o, g), dtype=torch.uint8, generator=gen)
    device = torch.device(args.device)
    blocks, scales = blocks.to(device), scales.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    dtype = torch.bfloat16
    out_bytes = e * o * g * 32 * dtype.itemsize
    date = datetime.date.today().isoformat()
    print(f"date: {date}")
    print(f"machine: {machine()}")
    print(f"input on {device}: blocks {list(blocks.shape)} uint8 + scales {list(scales.shape)} uint8 -> "
          f"{e}x{o}x{g * 32} bf16 ({out_bytes / 1e9:.2f} GB), "
          f"median of {args.repeats} interleaved rounds after 1 warm-up")

    print(f"load average before: {_load()}")
    # Bit-identical checks first, allowing for orientation ([E, in, out] there, [E, out, in] here), as int16 bits.
    flat_blocks, flat_scales = blocks.view(e * o, 1, g, 16), scales.view(e * o, 1, g)  # transpose becomes a no-op
    ours = dequantize(blocks, scales, dtype, name="gate_up_proj").view(torch.int16)
    checks = {"transformers (transposed back)":
              torch.equal(ours, convert_moe_packed_tensors(blocks, scales, dtype=dtype).view(torch.int16).mT)}
    core = convert_moe_packed_tensors(flat_blocks, flat_scales, dtype=dtype).view(e, o, g * 32)
    checks["transformers, no transpose"] = torch.equal(ours, core.view(torch.int16))
    del core
    buffer = torch.empty(e, o, g * 32, dtype=dtype, device=device)
    dequantize(blocks, scales, dtype, out=buffer)
    checks["ours, out= buffer"] = torch.equal(ours, buffer.view(torch.int16))
    del ours

    rows = interleaved({
        "transformers convert_moe_packed_tensors": lambda: convert_moe_packed_tensors(blocks, scales, dtype=dtype),
        "transformers, no transpose": lambda: convert_moe_packed_tensors(flat_blocks, flat_scales, dtype=dtype),
        "ours: dequantize": lambda: dequantize(blocks, scales, dtype),
        "ours: dequantize(out=reused buffer)": lambda: dequantize(blocks, scales, dtype, out=buffer),
        "ours + transpose to [E, in, out]": lambda: dequantize(blocks, scales, dtype).transpose(1, 2).contiguous(),
    }, args.repeats, sync)
    t_hf, t_core = rows["transformers convert_moe_packed_tensors"], rows["transformers, no transpose"]
    t_ours, t_out = rows["ours: dequantize"], rows["ours: dequantize(out=reused buffer)"]
    t_tr = rows["ours + transpose to [E, in, out]"]
    print(f"load average after: {_load()}")

    header = ("implementation", "median ms", "GB/s bf16 out", "vs transformers", "vs its no-transpose")
    print(f"{header[0]:<38} {header[1]:>9} {header[2]:>14} {header[3]:>16} {header[4]:>20}")
    for label, seconds in rows.items():
        print(f"{label:<38} {seconds * 1e3:>9.2f} {out_bytes / seconds / 1e9:>14.2f} {t_hf / seconds:>15.1f}x"
              f" {t_core / seconds:>19.1f}x")
    identical = all(checks.values())
    print("bit-identical: " + ", ".join(f"{k}: {v}" for k, v in checks.items()))
    print(f"speed-up of dequantize over convert_moe_packed_tensors: {t_hf / t_ours:.1f}x as each is called; "
          f"{t_core / t_ours:.1f}x over its dequantization alone (no transpose); "
          f"{t_core / t_out:.1f}x with a reused output buffer; {t_hf / t_tr:.1f}x when we also transpose")

    if args.markdown:
        print()
        print("| implementation | median ms | GB/s (bf16 out) | vs Transformers | vs its no-transpose |")
        print("|---|---:|---:|---:|---:|")
        for label, seconds in rows.items():
            print(f"| {label} | {seconds * 1e3:.2f} | {out_bytes / seconds / 1e9:.2f} | {t_hf / seconds:.1f}x "
                  f"| {t_core / seconds:.1f}x |")
    if not identical:
        sys.exit("outputs differ from transformers")


if __name__ == "__main__":
    main()
