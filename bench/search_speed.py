"""Full-text search time on 100,000 messages: python bench/search_speed.py [--messages N]."""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

WORDS = [
    "python", "sort", "list", "dict", "value", "key", "lambda", "lighthouse", "keeper", "sea", "storm",
    "light", "ship", "harbour", "coffee", "recipe", "kernel", "thread", "memory", "cache", "gpu", "layer",
    "quant", "context", "window", "token", "model", "answer", "question", "thinking", "budget", "preset",
    "search", "export", "import", "theme", "planner", "download", "merge", "shard", "offline",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    from qwen_chat.store.database import Store

    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.db")
        started = time.perf_counter()
        per_conversation = 100
        with store.connection.lock:
            conn = store.connection.db.conn
            conn.execute("BEGIN")
            for c in range(args.messages // per_conversation):
                cid = conn.execute("INSERT INTO conversations (title, created_at, updated_at) VALUES (?, 0, 0)",
                                   (f"chat {c}",)).lastrowid
                conn.executemany(
                    "INSERT INTO messages (conversation_id, role, content, thinking, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, 0, 0)",
                    [(cid, "user" if i % 2 == 0 else "assistant",
                      " ".join(rng.choices(WORDS, k=60)) + f" unique{c}x{i}",
                      " ".join(rng.choices(WORDS, k=30)) if i % 2 else "") for i in range(per_conversation)])
            conn.execute("COMMIT")
        print(f"{args.messages:,} messages written and indexed in {time.perf_counter() - started:.1f} s")
        timings = {}
        for query in ("lighthouse", "sort dict", "gpu quant context", "unique123x45", "zebra", "mem"):
            runs = []
            for _ in range(7):
                t = time.perf_counter()
                hits = store.search(query)
                runs.append((time.perf_counter() - t) * 1000)
            timings[query] = statistics.median(runs)
            print(f"  {query!r:24} {len(hits):3} hits  median {timings[query]:6.1f} ms")
        print(f"slowest median: {max(timings.values()):.1f} ms (target: under 50 ms)")


if __name__ == "__main__":
    main()
