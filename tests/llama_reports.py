"""What llama.cpp itself reports for a load: the buffer sizes it logs, which the planner's predictions are
checked against (dense models in test_planner.py, recurrent ones in test_recurrent_models.py)."""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

from qwen_chat.engines.llama import Engine
from qwen_chat.engines.protocol import Loaded, LoadRequest

SIZE_LINE = re.compile(r"(model|KV|RS|compute) buffer size =\s+([\d.]+) MiB")


def llama_cpp_reported_sizes(model: Path, n_ctx: int) -> dict[str, float]:
    """Load with the real engine and read the buffer sizes llama.cpp logs (MiB, summed over buffers); RS is
    a recurrent model's state (0 for others)."""
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("qwen_chat.llama_cpp")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    loaded = threading.Event()
    engine = Engine(lambda e: loaded.set() if isinstance(e, Loaded) else None).start()
    try:
        engine.load(LoadRequest(model, n_ctx))
        assert loaded.wait(120)
    finally:
        engine.shutdown()
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    sizes = {"model": 0.0, "KV": 0.0, "RS": 0.0, "compute": 0.0}
    for line in records:
        for kind, mib in SIZE_LINE.findall(line):
            sizes[kind] += float(mib)
    return sizes
