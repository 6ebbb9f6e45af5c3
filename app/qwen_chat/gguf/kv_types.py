"""The KV cache's element types: bytes per element (a q8_0 block is 32 values in 34 bytes) and the ggml type
id llama.cpp takes for each."""

from __future__ import annotations

KV_BYTES = {"f16": 2.0, "q8_0": 34 / 32}
GGML_TYPE = {"f16": 1, "q8_0": 8}


def kv_type_id(kv_type: str) -> int:
    return GGML_TYPE[kv_type]
