"""Hybrid recurrent models (Qwen3-Next, Qwen3.5: Gated DeltaNet layers with a recurrent state, a gated attention
layer with a KV cache every full_attention_interval layers) on the real llama.cpp, with tiny random-weight models
(tests/tiny_models.py): they load and generate; the metadata gives the planner the KV layers and the recurrent
state, and the prediction matches llama.cpp's own buffers; and the decode loop never reuses a recurrent state
that cannot be rolled back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from decode_reference import GREEDY
from decode_reference import answer as _answer
from decode_reference import fresh as _fresh
from decode_reference import llama as _llama
from decode_reference import loaded as _loaded
from decode_reference import logits as _logits
from decode_reference import tokens as _tokens
from llama_reports import llama_cpp_reported_sizes
from qwen_chat.engines.decode_loop import DecodeLoop
from qwen_chat.engines.llama import Engine
from qwen_chat.engines.protocol import Done, GenerateRequest, Loaded, LoadRequest
from qwen_chat.gguf.files import read_model_info
from qwen_chat.planning.plan_inputs import arch_from_info, candidate_from_info
from qwen_chat.planning.planner import compute_bytes
from qwen_chat.qwen3.sampling import Sampling
from qwen_chat.qwen3.template import ChatTemplate, Turn, build_prompt

from helpers import Recorder
from tiny_models import HEAD_DIM, N_KV, DeltaNet, write_tiny_hybrid

ARCHS = ("qwen35", "qwen3next", "qwen35moe")
MiB = 1 << 20




# ---- loading and generating -----------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_hybrid_model_loads_and_generates(tiny_hybrid_models: dict[str, Path], arch: str) -> None:
    import llama_cpp

    llm = _llama(tiny_hybrid_models[arch])
    try:
        assert llama_cpp.llama_model_is_hybrid(llm._model.model)
        with DecodeLoop(llm) as loop:
            assert loop.recurrent
            result = loop.generate(_tokens(llm, "<|im_start|>user\nhi<|im_end|>\n"), 8, GREEDY)
        assert result.generated >= 1 and result.finish in ("stop", "length")
    finally:
        llm.close()


# ---- what the file says ---------------------------------------------------------------------------------


def test_metadata_gives_kv_layers_and_recurrent_state(tiny_hybrid_models: dict[str, Path]) -> None:
    info = read_model_info(tiny_hybrid_models["qwen35"])
    assert info.architecture == "qwen35" and info.block_count == 4
    rec = info.recurrence
    assert rec is not None and rec.layers == (True, True, True, False)  # full attention every 4th layer
    assert info.kv_layers == 1 and info.kv_bytes_per_token() == N_KV * 2 * HEAD_DIM * 2
    net = DeltaNet()
    # llama.cpp's n_embd_r(): (d_conv - 1)·(d_inner + 2·n_group·d_state); n_embd_s(): d_state·d_inner; f32
    conv = (net.conv_kernel - 1) * (net.inner_size + 2 * net.group_count * net.state_size)
    assert rec.bytes_per_sequence() == 3 * 4 * (conv + net.state_size * net.inner_size)
    arch = arch_from_info(info)
    assert arch.kv_layers == 1 and arch.recurrent_state_bytes == rec.bytes_per_sequence()
    assert arch.memory_bytes(1000, "f16") == arch.kv_bytes(1000, "f16") + rec.bytes_per_sequence()
    assert read_model_info(tiny_hybrid_models["qwen3next"]).kv_layers == 1


def test_mtp_blocks_have_neither_kv_nor_state_nor_loaded_weights(tmp_path: Path) -> None:
    path = write_tiny_hybrid(tmp_path / "mtp.gguf", "qwen35", layers=8, mtp=True)
    info = read_model_info(path)
    assert info.block_count == 9 and info.nextn_layers == 1
    assert info.recurrence is not None and info.recurrence.layers == (True, True, True, False) * 2 + (False,)
    assert info.kv_layers == 2
    weights = candidate_from_info(info).weights
    assert weights.layer_dense[8] == 0 and weights.layer_dense[7] > 0  # llama.cpp skips the MTP block


def test_dense_qwen3_has_no_recurrence(tiny_models: dict[str, Path]) -> None:
    info = read_model_info(tiny_models["hybrid"])
    assert info.recurrence is None and info.kv_layers == info.block_count
    assert arch_from_info(info).kv_layers is None and arch_from_info(info).recurrent_state_bytes == 0


def test_per_layer_recurrent_flags_win_over_the_interval(tmp_path: Path) -> None:
    """attention.recurrent_layers, where a file has it, is what llama.cpp follows (the interval is then ignored)."""
    path = write_tiny_hybrid(tmp_path / "flags.gguf", "qwen35", layers=4, interval=4,
                             recurrent_layers=[True, False, True, False])
    info = read_model_info(path)
    assert info.recurrence is not None and info.recurrence.layers == (True, False, True, False)
    assert info.kv_layers == 2
    reported = llama_cpp_reported_sizes(path, 4096)
    assert reported["KV"] == pytest.approx(arch_from_info(info).kv_bytes(4096, "f16") / MiB, abs=0.01)


# ---- the planner against llama.cpp's own report ---------------------------------------------------------

# Larger linear-attention heads than the default tiny model: a recurrent state of ~1.5 MiB, which llama.cpp's
# two-decimal MiB report resolves to well under 1%.
BIG_STATE = DeltaNet(state_size=128, group_count=2, time_step_rank=8)



@pytest.mark.parametrize(("arch", "mtp"), [("qwen35", False), ("qwen3next", False), ("qwen35moe", False),
                                         ("qwen35", True), ("qwen35moe", True)])
@pytest.mark.parametrize("n_ctx", [4096, 16384])
def test_predictions_within_5_percent_of_llama_cpp(tmp_path: Path, arch: str, mtp: bool, n_ctx: int) -> None:
    """8 layers: 6 Gated DeltaNet (RS buffer), 2 attention (KV buffer); with `mtp`, a 9th block that llama.cpp
    neither loads nor gives memory. Measured: model 6.36 / 6.56 MiB, KV 1.00 / 4.00 MiB, RS 3.11 MiB, all
    predicted to llama.cpp's two decimals."""
    path = write_tiny_hybrid(tmp_path / f"{arch}.gguf", arch, layers=8, net=BIG_STATE, mtp=mtp)
    info = read_model_info(path)
    model = arch_from_info(info)
    reported = llama_cpp_reported_sizes(path, n_ctx)
    predicted = {"model": candidate_from_info(info).weights.cpu_model_buffers / MiB,
                 "KV": model.kv_bytes(n_ctx, "f16") / MiB, "RS": model.recurrent_state_bytes / MiB}
    for kind in predicted:
        assert reported[kind] > 0, kind
        assert abs(predicted[kind] - reported[kind]) / reported[kind] <= 0.05, (kind, predicted, reported)
        assert predicted[kind] == pytest.approx(reported[kind], abs=0.006), (kind, predicted, reported)  # rounding
    assert (model.memory_bytes(n_ctx, "f16") / MiB == pytest.approx(reported["KV"] + reported["RS"], rel=0.05))
    # The compute buffer formula's 8 MiB allowance was fitted on real models' activations, which a tiny model
    # does not have: here only check that the prediction does not fall short, and by no more than that allowance.
    compute = compute_bytes(model, n_ctx, flash_attn=False) / MiB
    assert reported["compute"] <= compute <= reported["compute"] * 1.05 + 8, (compute, reported)


# ---- reusing the cache ----------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["qwen35", "qwen3next"])
def hybrid(request: pytest.FixtureRequest, tiny_hybrid_models: dict[str, Path]) -> Iterator[tuple[object, DecodeLoop]]:
    yield from _loaded(tiny_hybrid_models[request.param])





def test_a_prompt_that_continues_the_cache_evaluates_only_its_new_tokens(hybrid) -> None:
    llm, loop = hybrid
    loop.clear()
    first = _tokens(llm, "<|im_start|>user\nwhat is blue?<|im_end|>\n<|im_start|>assistant\n")
    loop.generate(first, 6, GREEDY)
    cached = loop.tokens
    follow = cached + _tokens(llm, "<|im_end|>\n<|im_start|>user\nand red?<|im_end|>\n<|im_start|>assistant\n")
    result = loop.generate(follow, 4, GREEDY)
    assert result.reused == len(cached) and result.prompt_evaluated == len(follow) - len(cached)


@pytest.mark.parametrize("change", ["edit", "regenerate", "same prompt"])
def test_a_prompt_sharing_only_a_prefix_starts_over_and_matches_a_fresh_context(hybrid, change: str) -> None:
    llm, loop = hybrid
    path = Path(llm.model_path)
    loop.clear()
    first = _tokens(llm, "<|im_start|>user\ntell me about the sea<|im_end|>\n<|im_start|>assistant\n")
    loop.generate(first, 8, GREEDY)
    assert loop.n_cached > len(first)
    if change == "edit":  # the user edits the last message: shares the start of it
        prompt = _tokens(llm, "<|im_start|>user\ntell me about the sky<|im_end|>\n<|im_start|>assistant\n")
    elif change == "regenerate":  # the same prompt again: the cache holds it and the old answer after it
        prompt = first
    else:  # exactly what the cache holds: its last token must be evaluated again for its logits
        prompt = loop.tokens
    result = loop.generate(prompt, 1, GREEDY)
    # an edit leaves the cache before every context checkpoint: nothing is kept from the old state; the others
    # go back to the checkpoint taken where the first prompt's last turn begins (its last <|im_start|>)
    marker = _tokens(llm, "<|im_start|>")[0]
    kept = 0 if change == "edit" else max(i for i, t in enumerate(first) if t == marker)
    assert result.reused == kept and result.prompt_evaluated == len(prompt) - kept
    logits = _logits(loop)
    loop.clear()
    again = loop.generate(prompt, 8, GREEDY)
    expected_tokens, expected_logits = _fresh(path, prompt, 8)
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-5, atol=1e-5)
    assert _answer(loop, prompt, again) == expected_tokens


def test_llama_cpp_refuses_to_drop_part_of_a_recurrent_state(hybrid) -> None:
    """What 0.3.36's llama.cpp offers: a recurrent memory cannot drop a tail (without n_rs_seq snapshots, which
    Llama() does not set), only the whole sequence. The loop does not rely on this refusal, but it is why it
    must start over."""
    import llama_cpp.llama_cpp as C  # noqa: N812

    llm, loop = hybrid
    loop.clear()
    loop.generate(_tokens(llm, "<|im_start|>user\nhello<|im_end|>\n"), 4, GREEDY)
    memory = C.llama_get_memory(loop._ctx)
    assert C.llama_n_rs_seq(loop._ctx) == 0
    assert not C.llama_memory_seq_rm(memory, 0, loop.n_cached - 1, -1)
    assert not C.llama_memory_seq_rm(memory, 0, 3, -1)
    assert C.llama_memory_seq_rm(memory, 0, loop.n_cached, -1)  # nothing after the last position: fine
    loop.clear()


def test_regenerating_through_the_engine_gives_the_same_answer(tiny_hybrid_models: dict[str, Path]) -> None:
    """The engine on a recurrent model: the same request twice (a regeneration) evaluates the prompt again from
    its context checkpoint (where its last turn begins) and, greedy, answers exactly as the first time, which a
    reused stale state would not."""
    path = tiny_hybrid_models["qwen35"]
    rec = Recorder()
    eng = Engine(rec).start()
    try:
        eng.load(LoadRequest(path, n_ctx=512))
        assert isinstance(rec.until(Loaded)[0][-1], Loaded)
        prompt = build_prompt(ChatTemplate(read_model_info(path).chat_template), [Turn("user", "hi")],
                              enable_thinking=False)
        answers = []
        evaluated = []
        for request_id in (1, 2):
            eng.generate(GenerateRequest(request_id, prompt, Sampling(temperature=0.0, top_k=1, max_tokens=12)))
            done = rec.until(Done)[0][-1]
            assert isinstance(done, Done)
            answers.append((done.thinking, done.answer, done.completion_tokens))
            evaluated.append((done.prompt_evaluated, done.prompt_tokens))
        assert answers[0] == answers[1]
        # the old state held the old answer: the second goes back to the checkpoint before "<|im_start|>assistant"
        (first_evaluated, n_prompt), (second_evaluated, _) = evaluated
        llm = _llama(path)
        try:
            tokens = _tokens(llm, prompt)
            marker = _tokens(llm, "<|im_start|>")[0]
        finally:
            llm.close()
        at = max(i for i, t in enumerate(tokens) if t == marker)
        assert first_evaluated == n_prompt == len(tokens) and second_evaluated == n_prompt - at
    finally:
        eng.shutdown()

def test_the_logits_comparison_sees_one_changed_word(tiny_hybrid_models: dict[str, Path]) -> None:
    """The fresh-context comparison above would catch a stale state: one word earlier in the prompt moves the
    last logits far beyond its tolerance."""
    path = tiny_hybrid_models["qwen35"]
    llm = _llama(path)
    try:
        sea, sky = (_tokens(llm, f"<|im_start|>user\ntell me about the {w}<|im_end|>\n") for w in ("sea", "sky"))
    finally:
        llm.close()
    assert np.abs(_fresh(path, sea, 1)[1] - _fresh(path, sky, 1)[1]).max() > 1e-2
