"""Tiny random-weight `qwen3` GGUF models written with the `gguf` package: they load in llama.cpp in a
fraction of a second and exercise the real loading, template and thinking code. Their text is noise.

The vocabulary is byte-level BPE (each byte a token, as GPT-2/Qwen map bytes to characters) plus Qwen's
special tokens, so any text tokenizes and `<think>`/`</think>` are single tokens like in Qwen3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TEMPLATES = Path(__file__).parent / "fixtures" / "templates"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]


def _byte_chars() -> list[str]:
    """The printable character GPT-2 style byte-level BPE uses for each byte value."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars = {}
    extra = 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def write_tiny_qwen3(path: Path, template: str | None = "qwen3-hybrid.jinja", *, layers: int = 2,
                     context_length: int = 40960, split_max_tensors: int = 0, seed: int = 0) -> Path:
    """Write a tiny qwen3 model; returns the path to load (the first shard when split)."""
    import gguf

    rng = np.random.default_rng(seed)
    n_embd, n_head, n_kv, head_dim, n_ff = 64, 4, 2, 16, 128
    tokens = _byte_chars() + ["Ġt"] + SPECIALS
    n_vocab = len(tokens)
    token_types = [1] * 257 + [3, 3, 3, 4, 4]  # normal, then control / user-defined like Qwen3
    writer = gguf.GGUFWriter(str(path), "qwen3", split_max_tensors=split_max_tensors)
    writer.add_name("tiny-qwen3-test")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(context_length)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges(["Ġ t"])
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_pad_token_id(tokens.index("<|endoftext|>"))
    writer.add_add_bos_token(False)
    if template:
        writer.add_chat_template((TEMPLATES / template).read_text())

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    writer.add_tensor("token_embd.weight", weight(n_vocab, n_embd))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    for i in range(layers):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(p + "attn_q.weight", weight(n_head * head_dim, n_embd))
        writer.add_tensor(p + "attn_k.weight", weight(n_kv * head_dim, n_embd))
        writer.add_tensor(p + "attn_v.weight", weight(n_kv * head_dim, n_embd))
        writer.add_tensor(p + "attn_output.weight", weight(n_embd, n_head * head_dim))
        writer.add_tensor(p + "attn_q_norm.weight", np.ones(head_dim, dtype=np.float32))
        writer.add_tensor(p + "attn_k_norm.weight", np.ones(head_dim, dtype=np.float32))
        writer.add_tensor(p + "ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(p + "ffn_gate.weight", weight(n_ff, n_embd))
        writer.add_tensor(p + "ffn_up.weight", weight(n_ff, n_embd))
        writer.add_tensor(p + "ffn_down.weight", weight(n_embd, n_ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if split_max_tensors:
        return sorted(path.parent.glob(f"{path.stem}-00001-of-*.gguf"))[0]
    return path
