"""What the planner plans from: a model's architecture (`Arch`) and the weights of each of its quants
(`Candidate`), read from a GGUF file's tensor table or estimated from a catalog entry.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from qwen_chat.catalog.entries import CatalogModel, Quant
from qwen_chat.gguf.files import ModelInfo
from qwen_chat.gguf.header import GGUFHeader
from qwen_chat.planning.planner import Arch, Candidate, Weights

_REPACKED = {2, 12, 20}  # ggml Q4_0, Q4_K, IQ4_NL: repacked by the x86/ARM CPU backend
_EXPERTS = re.compile(r"\.ffn_(up|down|gate|gate_up)_(ch|)exps")
_BLOCK = re.compile(r"^blk\.(\d+)\.")


# ---- weights from a GGUF header or from the catalog -----------------------------------------------------


def weights_from_headers(headers: Sequence[GGUFHeader], layers: int, skipped_from: int | None = None) -> Weights:
    """`skipped_from`: the first block llama.cpp does not load (the MTP blocks after a model's own layers)."""
    dense, experts = [0] * layers, [0] * layers
    output = embed = repack = 0
    has_output = False
    for header in headers:
        for tensor in header.tensors:
            size = tensor.n_bytes
            block = _BLOCK.match(tensor.name)
            if block and skipped_from is not None and skipped_from <= int(block[1]) < layers:
                continue
            if tensor.ggml_type in _REPACKED and len(tensor.shape) == 2 and tensor.shape[1] % 8 == 0:
                repack += size
            if block and int(block[1]) < layers:
                target = experts if _EXPERTS.search(tensor.name) else dense
                target[int(block[1])] += size
            elif tensor.name == "token_embd.weight":
                embed += size
            else:
                has_output = has_output or tensor.name == "output.weight"
                output += size
    if not has_output:
        output += embed  # tied embeddings: llama.cpp puts a copy of token_embd in the output layer
    return Weights(tuple(dense), tuple(experts), output, embed, exact=True, tied=not has_output, repack=repack)


def weights_estimate(total: int, layers: int, embed: int, tied: bool, expert_share: float) -> Weights:
    """Spread a file size over its tensors when only the size is known (catalog entries)."""
    output = embed
    body = max(0, total - embed - (0 if tied else output))
    per_layer = body // max(1, layers)
    experts = int(per_layer * expert_share)
    return Weights((per_layer - experts,) * layers, (experts,) * layers, output, embed, exact=False, tied=tied)


# ---- inputs from a file on disk -------------------------------------------------------------------------


def arch_from_info(info: ModelInfo, yarn_factors: tuple[int, ...] = (), native_context: int | None = None) -> Arch:
    """A GGUF on disk. Qwen3 hybrid GGUFs say 40,960; YaRN applies only from the catalog's native 32,768."""
    return Arch(
        layers=info.block_count,
        kv_heads=info.head_count_kv,
        key_length=info.key_length,
        value_length=info.value_length,
        n_vocab=info.n_vocab or 151936,
        n_head=info.head_count,
        gguf_context=info.context_length,
        native_context=native_context or info.context_length,
        yarn_factors=yarn_factors,
        is_moe=info.expert_count > 0,
        kv_layers=info.kv_layers if info.kv_layers != info.block_count else None,
        recurrent_state_bytes=info.recurrence.bytes_per_sequence() if info.recurrence else 0,
    )


def candidate_from_info(info: ModelInfo) -> Candidate:
    quant = _QUANT_IN_NAME.search(info.path.name)
    name = quant[1].upper() if quant else info.path.stem
    # llama.cpp loads the multi-token-prediction blocks only when asked (llama_model_params.load_mtp)
    skipped = info.block_count - info.nextn_layers if info.nextn_layers else None
    return Candidate(name, weights_from_headers(info.headers, info.block_count, skipped))


_QUANT_IN_NAME = re.compile(r"[-_.]((?:UD-)?(?:I?Q\d[A-Z0-9_]*|F16|BF16|F32))(?:-\d{5}-of-\d{5})?\.gguf$", re.I)


# ---- inputs from the catalog ----------------------------------------------------------------------------

def arch_from_catalog(model: CatalogModel) -> Arch:
    return Arch(
        layers=model.layers, kv_heads=model.kv_heads, key_length=model.head_dim, value_length=model.head_dim,
        n_vocab=model.vocab_size, n_head=model.heads, gguf_context=model.gguf_context,
        native_context=model.native_context, yarn_factors=model.yarn_factors, is_moe=model.is_moe,
        kv_layers=model.kv_layers, recurrent_state_bytes=model.recurrent_state_bytes)


def candidates_from_catalog(model: CatalogModel, quant: Quant | None = None) -> list[Candidate]:
    return [Candidate(q.name, weights_from_catalog(model, q)) for q in ([quant] if quant else model.quants.values())]


def weights_from_catalog(model: CatalogModel, quant: Quant) -> Weights:
    bytes_per_param = quant.size / model.params
    embed_params = model.vocab_size * model.hidden
    tied = not model.is_moe and model.params < 5_000_000_000  # Qwen3 0.6B/1.7B/4B tie their embeddings
    share = 0.0
    if model.is_moe and model.active_params and model.experts > model.experts_used:
        per_expert = (model.params - model.active_params) / (model.layers * (model.experts - model.experts_used))
        layer_params = (model.params - embed_params * 2) / model.layers
        share = min(0.99, model.experts * per_expert / layer_params)
    return weights_estimate(quant.size, model.layers, int(embed_params * bytes_per_param), tied, share)
