"""A long conversation through the real ChatSession keeps reusing llama.cpp's KV cache: later turns evaluate only
their new text, never the history again (bench/kv_reuse.py measures what that is worth in time to first token)."""

from __future__ import annotations

import queue
from pathlib import Path

from qwen_chat.config import presets
from qwen_chat.engines.protocol import Done, Loaded
from qwen_chat.qwen3.template import Variant
from qwen_chat.session.chat import ChatSession
from qwen_chat.session.events import AnswerSaved, SessionEvent
from qwen_chat.store.database import Store
from qwen_chat.system.logging_setup import setup_logging

from helpers import next_event

QUESTIONS = [
    "In one sentence, describe the colour blue.",
    "In one sentence, describe a cat.",
    "In one sentence, explain what a Python list is.",
    "In one sentence, describe the planet Mars.",
    "In one sentence, explain what HTTP is.",
    "In one sentence, summarise what we talked about.",
]

# ChatML around a new user message, as the chat template adds it after the previous answer:
# "<|im_end|>", "\n", "<|im_start|>", "user", "\n", <message>, "<|im_end|>", "\n", "<|im_start|>", "assistant", "\n"
TEMPLATE_TOKENS = 10
SLACK = 2  # a token merging across a turn boundary on retokenization


def test_later_turns_evaluate_only_their_new_text(real_model: Path, tmp_path: Path) -> None:
    import llama_cpp

    setup_logging()
    # Short, greedy answers: fast, and the same conversation on every run. (The bench uses Qwen's sampling.)
    presets.save_override("instruct-2507", {"max_output": 32, "temperature": 0.0})
    events: queue.Queue[SessionEvent] = queue.Queue()
    session = ChatSession(Store(tmp_path / "kv.db"), events.put)
    vocab = None
    try:
        session.load_model(real_model, n_ctx=2048)
        next_event(events, Loaded)
        assert session.model.variant is Variant.NO_THINKING  # so the instruct-2507 override above is the preset used
        # the tokenizer alone, to count a message's tokens (loaded after the engine: llama.cpp logs go to a file)
        vocab = llama_cpp.Llama(str(real_model), vocab_only=True, n_ctx=64, verbose=False)
        conversation = session.new_conversation()
        previous: Done | None = None
        answer_reevaluated: list[str] = []
        for turn, text in enumerate(QUESTIONS, start=1):
            session.send(conversation.id, text)
            saved = next_event(events, AnswerSaved)
            assert saved.done is not None, saved
            done = saved.done
            message = len(vocab.tokenize(text.encode(), add_bos=False, special=False))
            seen = (f"turn {turn}: {done.prompt_evaluated} of {done.prompt_tokens} prompt tokens evaluated, "
                    f"answer {done.completion_tokens} tokens ({done.finish}): {done.answer!r}")
            if previous is None:
                assert done.prompt_evaluated == done.prompt_tokens, seen  # a fresh engine: nothing is cached
            else:
                # After the previous turn the KV cache holds its prompt and the answer as generated
                # (`context_used`; the end-of-turn token was sampled, never evaluated). The new prompt is the same
                # history re-rendered from the store plus the new turn, so only what follows must be evaluated:
                # the end-of-turn token, the new user message and the template tokens around it.
                must = done.prompt_tokens - previous.context_used
                assert must <= message + TEMPLATE_TOKENS + SLACK, seen
                assert done.prompt_evaluated >= message, seen
                # Every earlier turn, up to the start of the previous answer, comes from the cache: a template or
                # store that rendered any of it differently from the last prompt would fail here.
                assert done.prompt_evaluated <= must + previous.completion_tokens + SLACK, seen
                # The previous answer is re-rendered from its text. When that tokenizes as it was generated, only
                # `must` is evaluated. A sampled answer can take a non-canonical split (bench/kv_reuse.py: the model
                # wrote "O"+"ak", the text re-tokenizes as "Oak"), and then it is evaluated again; allow one such turn.
                if done.prompt_evaluated > must + SLACK:
                    answer_reevaluated.append(seen)
                # The headline: once the history is longer than the new turn, most of the prompt comes from the cache.
                if turn >= 3:
                    assert done.prompt_evaluated < done.prompt_tokens / 2, seen
            previous = done
        assert len(answer_reevaluated) <= 1, answer_reevaluated
        assert previous is not None and previous.prompt_tokens > 4 * previous.prompt_evaluated  # a real history
    finally:
        session.close()
        if vocab is not None:
            vocab.close()
