"""Merge speed: qwen_chat.gguf.split.merge_shards vs `cat shard1 shard2 shard3 > file`, same shards, same disk.

Builds a split GGUF set of realistic size (random int8 tensors written with the `gguf` package's GGUFWriter,
split by size) in a temporary folder, then alternates `cat` and merge_shards `--runs` times each and prints the
median throughput of both and their ratio (the merge must reach >= 0.9 of cat). merge_shards fsyncs its
output (it must, to be safe), so `cat` is also shown followed by an fsync of its output, the like-for-like
figure. Everything is deleted at the end.

Size: a `cat` smaller than the kernel's dirty-page limit never waits for the disk (its data is still in RAM
when it exits), while a merge must put its data on the disk before it renames the file. Real model files are
far larger than that limit, so by default the set is twice the limit (vm.dirty_ratio of the available memory),
where `cat` is bound by the disk as a real merge is. `--size-mb` sets it by hand.

Usage: python bench/merge_speed.py [--dir FOLDER] [--size-mb N] [--shards 3] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "app"))

TENSOR_MB = 64


def build_split_set(folder: Path, size_mb: int, shards: int) -> Path:
    import gguf
    import numpy as np

    n_tensors = max(shards, size_mb // TENSOR_MB)
    per_shard = -(-n_tensors // shards)
    block = np.random.default_rng(0).integers(-128, 128, size=(TENSOR_MB, 1 << 20), dtype=np.int8)
    writer = gguf.GGUFWriter(str(folder / "bench.gguf"), "qwen3",
                             split_max_size=per_shard * TENSOR_MB * (1 << 20) + (1 << 20))
    writer.add_name("merge-speed-bench")
    for i in range(n_tensors):
        writer.add_tensor(f"blk.{i}.ffn_up.weight", block)  # same buffer each time: memory stays at 64 MiB
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    first = sorted(folder.glob("bench-00001-of-*.gguf"))
    if not first:
        raise SystemExit("the gguf writer did not produce a split set")
    return first[0]


def default_size_mb() -> int:
    import psutil

    try:
        ratio = int(Path("/proc/sys/vm/dirty_ratio").read_text()) / 100
        fixed = int(Path("/proc/sys/vm/dirty_bytes").read_text())
    except (OSError, ValueError):
        ratio, fixed = 0.2, 0
    limit = fixed or int(psutil.virtual_memory().available * ratio)
    return max(1536, 2 * limit >> 20)


def time_cat(shards: list[Path], out: Path, fsync: bool) -> float:
    os.sync()  # no dirty pages of an earlier run may be written back inside this timing
    start = time.perf_counter()
    with out.open("wb") as f:
        subprocess.run(["cat", *map(str, shards)], stdout=f, check=True)
        if fsync:
            os.fsync(f.fileno())
    elapsed = time.perf_counter() - start
    out.unlink()
    return elapsed


def time_merge(first: Path, out: Path) -> float:
    from qwen_chat.gguf.split import merge_shards

    os.sync()
    start = time.perf_counter()
    result = merge_shards(first, out)  # the shards are kept by default
    elapsed = time.perf_counter() - start
    if not result.merged:
        raise SystemExit(result.message)
    out.unlink()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--size-mb", type=int, default=0, help="default: twice the dirty-page limit")
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not args.size_mb:
        args.size_mb = default_size_mb()
        print(f"set size: {args.size_mb} MiB (twice the dirty-page limit of this machine)")

    free = shutil.disk_usage(args.dir).free
    needed = 2 * args.size_mb * (1 << 20) + (256 << 20)  # the shards and one merged copy at a time
    if free < needed:
        raise SystemExit(f"{args.dir} has {free / 1e9:.1f} GB free, the bench needs {needed / 1e9:.1f} GB")
    work = Path(tempfile.mkdtemp(prefix="merge-speed-", dir=args.dir))
    try:
        print(f"building a {args.size_mb} MiB split set in {work} ...", flush=True)
        first = build_split_set(work, args.size_mb, args.shards)
        shards = sorted(work.glob("bench-0*-of-*.gguf"))
        total = sum(p.stat().st_size for p in shards)
        print(f"{len(shards)} shards, {total / 1e9:.2f} GB: " + ", ".join(p.name for p in shards))
        times: dict[str, list[float]] = {"cat": [], "cat+fsync": [], "merge_shards": []}
        for run in range(args.runs):
            times["cat"].append(time_cat(shards, work / "cat.gguf", fsync=False))
            times["cat+fsync"].append(time_cat(shards, work / "cat.gguf", fsync=True))
            times["merge_shards"].append(time_merge(first, work / "merged.gguf"))
            print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
        medians = {k: statistics.median(v) for k, v in times.items()}
        for name, seconds in medians.items():
            print(f"{name:>13}: median {seconds:.2f} s = {total / seconds / 1e6:,.0f} MB/s")
        print(f"ratio merge_shards / cat       : {medians['cat'] / medians['merge_shards']:.2f} (speed)")
        print(f"ratio merge_shards / cat+fsync : {medians['cat+fsync'] / medians['merge_shards']:.2f} (speed)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
