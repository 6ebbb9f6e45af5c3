"""Tiny random-weight `qwen3` GGUF models written with the `gguf` package: they load in llama.cpp in a
fraction of a second and exercise the real loading, template and thinking code. Their text is noise.

The vocabulary is byte-level BPE (each byte a token, as GPT-2/Qwen map bytes to characters) plus Qwen's
special tokens, so any text tokenizes and `<think>`/`</think>` are single tokens like in Qwen3.

The hybrid recurrent architectures (`qwen3next`, `qwen35`, `qwen35moe`) are written with the tensors and
shapes llama.cpp 0.3.36 loads for them (src/models/qwen3next.cpp, qwen35.cpp, qwen35moe.cpp): Gated DeltaNet
layers with a conv + ssm state, and a gated full-attention layer every `full_attention_interval` layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TEMPLATES = Path(__file__).parent / "fixtures" / "templates"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
N_EMBD, N_HEAD, N_KV, HEAD_DIM, N_FF = 64, 4, 2, 16, 128


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


TOKENS = _byte_chars() + ["Ġt"] + SPECIALS


def _writer(path: Path, arch: str, template: str | None, layers: int, context_length: int,
            split_max_tensors: int = 0) -> Any:
    """A GGUFWriter with the header every tiny model shares: sizes, attention, and the Qwen-like tokenizer."""
    import gguf

    token_types = [1] * 257 + [3, 3, 3, 4, 4]  # normal, then control / user-defined like Qwen3
    writer = gguf.GGUFWriter(str(path), arch, split_max_tensors=split_max_tensors)
    writer.add_name(f"tiny-{arch}-test")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(context_length)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_KV)
    writer.add_key_length(HEAD_DIM)
    writer.add_value_length(HEAD_DIM)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(TOKENS)
    writer.add_token_types(token_types)
    writer.add_token_merges(["Ġ t"])
    writer.add_eos_token_id(TOKENS.index("<|im_end|>"))
    writer.add_pad_token_id(TOKENS.index("<|endoftext|>"))
    writer.add_add_bos_token(False)
    if template:
        writer.add_chat_template((TEMPLATES / template).read_text())
    return writer


def _weights(seed: int, scale: float = 0.02) -> Callable[..., np.ndarray]:
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    return weight


def _ones(n: int) -> np.ndarray:
    return np.ones(n, dtype=np.float32)


def _finish(writer: Any, path: Path, split_max_tensors: int = 0) -> Path:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if split_max_tensors:
        return sorted(path.parent.glob(f"{path.stem}-00001-of-*.gguf"))[0]
    return path


def write_tiny_qwen3(path: Path, template: str | None = "qwen3-hybrid.jinja", *, layers: int = 2,
                     context_length: int = 40960, split_max_tensors: int = 0, seed: int = 0,
                     scale: float = 0.02) -> Path:
    """Write a tiny qwen3 model; returns the path to load (the first shard when split). A larger `scale` (0.1)
    makes its greedy text depend on the context (the draft-model tests compare continuations)."""
    writer = _writer(path, "qwen3", template, layers, context_length, split_max_tensors)
    weight = _weights(seed, scale)
    n_embd, n_head, n_kv, head_dim, n_ff = N_EMBD, N_HEAD, N_KV, HEAD_DIM, N_FF
    writer.add_tensor("token_embd.weight", weight(len(TOKENS), n_embd))
    writer.add_tensor("output_norm.weight", _ones(n_embd))
    for i in range(layers):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", _ones(n_embd))
        writer.add_tensor(p + "attn_q.weight", weight(n_head * head_dim, n_embd))
        writer.add_tensor(p + "attn_k.weight", weight(n_kv * head_dim, n_embd))
        writer.add_tensor(p + "attn_v.weight", weight(n_kv * head_dim, n_embd))
        writer.add_tensor(p + "attn_output.weight", weight(n_embd, n_head * head_dim))
        writer.add_tensor(p + "attn_q_norm.weight", _ones(head_dim))
        writer.add_tensor(p + "attn_k_norm.weight", _ones(head_dim))
        writer.add_tensor(p + "ffn_norm.weight", _ones(n_embd))
        writer.add_tensor(p + "ffn_gate.weight", weight(n_ff, n_embd))
        writer.add_tensor(p + "ffn_up.weight", weight(n_ff, n_embd))
        writer.add_tensor(p + "ffn_down.weight", weight(n_embd, n_ff))
    return _finish(writer, path, split_max_tensors)


# ---- hybrid recurrent models (Gated DeltaNet + gated attention) ------------------------------------------


@dataclass(frozen=True)
class DeltaNet:
    """The linear-attention sizes, as the GGUF's ssm.* keys name them (llama.cpp's hparams.ssm_*)."""

    conv_kernel: int = 4  # ssm.conv_kernel (d_conv)
    state_size: int = 16  # ssm.state_size: the head size of the K and V heads
    group_count: int = 2  # ssm.group_count: K heads
    time_step_rank: int = 4  # ssm.time_step_rank: V heads

    @property
    def inner_size(self) -> int:  # ssm.inner_size: V heads × head size
        return self.state_size * self.time_step_rank

    @property
    def conv_dim(self) -> int:  # Q, K and V channels through the short convolution
        return 2 * self.state_size * self.group_count + self.inner_size


N_EXPERT, N_EXPERT_USED, N_FF_EXP = 4, 2, 32


def write_tiny_hybrid(path: Path, arch: str = "qwen35", template: str | None = "qwen3.5-4b.jinja", *,
                      layers: int = 4, interval: int = 4, context_length: int = 262144, seed: int = 0,
                      net: DeltaNet = DeltaNet(), recurrent_layers: list[bool] | None = None,
                      mtp: bool = False) -> Path:
    """Write a tiny `qwen3next`, `qwen35` or `qwen35moe` model: layer i is full attention when
    (i + 1) % interval == 0, Gated DeltaNet otherwise (as llama.cpp reads full_attention_interval), or as
    `recurrent_layers` says (written as attention.recurrent_layers, which llama.cpp prefers). `mtp` adds a
    multi-token-prediction block after them (nextn_predict_layers = 1), as converted Qwen3.5 GGUFs carry.

    Weights are larger than the qwen3 model's (0.1): its greedy text then varies with the context, which the
    cache-reuse tests compare."""
    moe = arch in ("qwen3next", "qwen35moe")
    writer = _writer(path, arch, template, layers + mtp, context_length)
    _hybrid_keys(writer, arch, interval, net, moe)
    if mtp:
        writer.add_nextn_predict_layers(1)
    if recurrent_layers is not None:
        writer.add_array(f"{arch}.attention.recurrent_layers", recurrent_layers)
    recurrent = recurrent_layers or [(i + 1) % interval != 0 for i in range(layers)]
    weight = _weights(seed, 0.1)
    writer.add_tensor("token_embd.weight", weight(len(TOKENS), N_EMBD))
    writer.add_tensor("output_norm.weight", _ones(N_EMBD))
    for i in range(layers):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", _ones(N_EMBD))
        writer.add_tensor(p + "post_attention_norm.weight", _ones(N_EMBD))
        if recurrent[i]:
            _delta_net(writer, p, weight, net, arch)
        else:
            _gated_attention(writer, p, weight)
        (_moe_ffn if moe else _dense_ffn)(writer, p, weight)
    if mtp:
        _mtp_block(writer, f"blk.{layers}.", weight, moe)
    return _finish(writer, path)


def _mtp_block(writer: Any, p: str, weight: Callable[..., np.ndarray], moe: bool) -> None:
    """A gated-attention block with the NextN projection (llama.cpp skips it unless asked to load MTP)."""
    writer.add_tensor(p + "attn_norm.weight", _ones(N_EMBD))
    writer.add_tensor(p + "post_attention_norm.weight", _ones(N_EMBD))
    _gated_attention(writer, p, weight)
    (_moe_ffn if moe else _dense_ffn)(writer, p, weight)
    writer.add_tensor(p + "nextn.eh_proj.weight", weight(N_EMBD, 2 * N_EMBD))
    writer.add_tensor(p + "nextn.enorm.weight", _ones(N_EMBD))
    writer.add_tensor(p + "nextn.hnorm.weight", _ones(N_EMBD))
    writer.add_tensor(p + "nextn.shared_head_norm.weight", _ones(N_EMBD))


def _hybrid_keys(writer: Any, arch: str, interval: int, net: DeltaNet, moe: bool) -> None:
    writer.add_full_attention_interval(interval)
    writer.add_ssm_conv_kernel(net.conv_kernel)
    writer.add_ssm_state_size(net.state_size)
    writer.add_ssm_group_count(net.group_count)
    writer.add_ssm_time_step_rank(net.time_step_rank)
    writer.add_ssm_inner_size(net.inner_size)
    if arch != "qwen3next":  # Qwen3.5 uses multi-section RoPE (text only: every section sees the same position)
        writer.add_rope_dimension_sections([4, 2, 2, 0])
    if moe:
        writer.add_expert_count(N_EXPERT)
        writer.add_expert_used_count(N_EXPERT_USED)
        writer.add_expert_feed_forward_length(N_FF_EXP)
        writer.add_expert_shared_feed_forward_length(N_FF_EXP)


def _gated_attention(writer: Any, p: str, weight: Callable[..., np.ndarray]) -> None:
    # Q carries the output gate: two head-sized rows per head
    writer.add_tensor(p + "attn_q.weight", weight(2 * N_HEAD * HEAD_DIM, N_EMBD))
    writer.add_tensor(p + "attn_k.weight", weight(N_KV * HEAD_DIM, N_EMBD))
    writer.add_tensor(p + "attn_v.weight", weight(N_KV * HEAD_DIM, N_EMBD))
    writer.add_tensor(p + "attn_output.weight", weight(N_EMBD, N_HEAD * HEAD_DIM))
    writer.add_tensor(p + "attn_q_norm.weight", _ones(HEAD_DIM))
    writer.add_tensor(p + "attn_k_norm.weight", _ones(HEAD_DIM))


def _delta_net(writer: Any, p: str, weight: Callable[..., np.ndarray], net: DeltaNet, arch: str) -> None:
    v_heads = net.time_step_rank
    writer.add_tensor(p + "attn_qkv.weight", weight(net.conv_dim, N_EMBD))
    writer.add_tensor(p + "attn_gate.weight", weight(net.inner_size, N_EMBD))
    writer.add_tensor(p + "ssm_conv1d.weight", weight(net.conv_dim, net.conv_kernel))
    writer.add_tensor(p + "ssm_dt.bias", weight(v_heads))
    writer.add_tensor(p + "ssm_a", -np.ones(v_heads, dtype=np.float32))  # a decay: A = -exp(A_log) < 0
    if arch == "qwen3next":
        writer.add_tensor(p + "ssm_ba.weight", weight(2 * v_heads, N_EMBD))
    else:
        writer.add_tensor(p + "ssm_beta.weight", weight(v_heads, N_EMBD))
        writer.add_tensor(p + "ssm_alpha.weight", weight(v_heads, N_EMBD))
    writer.add_tensor(p + "ssm_norm.weight", _ones(net.state_size))
    writer.add_tensor(p + "ssm_out.weight", weight(N_EMBD, net.inner_size))


def _dense_ffn(writer: Any, p: str, weight: Callable[..., np.ndarray]) -> None:
    writer.add_tensor(p + "ffn_gate.weight", weight(N_FF, N_EMBD))
    writer.add_tensor(p + "ffn_up.weight", weight(N_FF, N_EMBD))
    writer.add_tensor(p + "ffn_down.weight", weight(N_EMBD, N_FF))


def _moe_ffn(writer: Any, p: str, weight: Callable[..., np.ndarray]) -> None:
    writer.add_tensor(p + "ffn_gate_inp.weight", weight(N_EXPERT, N_EMBD))
    writer.add_tensor(p + "ffn_gate_exps.weight", weight(N_EXPERT, N_FF_EXP, N_EMBD))
    writer.add_tensor(p + "ffn_up_exps.weight", weight(N_EXPERT, N_FF_EXP, N_EMBD))
    writer.add_tensor(p + "ffn_down_exps.weight", weight(N_EXPERT, N_EMBD, N_FF_EXP))
    writer.add_tensor(p + "ffn_gate_inp_shexp.weight", weight(N_EMBD))
    writer.add_tensor(p + "ffn_gate_shexp.weight", weight(N_FF_EXP, N_EMBD))
    writer.add_tensor(p + "ffn_up_shexp.weight", weight(N_FF_EXP, N_EMBD))
    writer.add_tensor(p + "ffn_down_shexp.weight", weight(N_EMBD, N_FF_EXP))
