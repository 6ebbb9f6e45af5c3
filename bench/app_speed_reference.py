"""The reference side of bench/app_speed.py: plain llama-cpp-python on the prompt the app would send."""

from __future__ import annotations

import time
from pathlib import Path

N_CTX = 4096  # the app runs with --ctx 4096 too


class Reference:
    def __init__(self, model: Path) -> None:
        import llama_cpp
        import psutil

        from qwen_chat.gguf.files import read_model_info
        from qwen_chat.qwen3.template import ChatTemplate

        self.info = read_model_info(model)
        self.template = ChatTemplate(self.info.chat_template, self.info.bos_token, self.info.eos_token)
        physical = psutil.cpu_count(logical=False) or 1
        self.llm = llama_cpp.Llama(str(model), n_ctx=N_CTX, n_threads=physical,
                                   n_threads_batch=psutil.cpu_count() or physical, n_batch=512, verbose=False)

    def speed(self, text: str, max_tokens: int, scripted: bool = False) -> float:
        """Decode tokens/s of one answer: streamed tokens after the first over the time they took (as the app
        measures). `scripted` changes nothing here: the replaying engine decodes with this same loop."""
        from qwen_chat.config.presets import sampling_for
        from qwen_chat.qwen3.template import Turn, Variant, build_prompt

        variant = self.template.variant
        thinking = variant is not Variant.NO_THINKING
        sampling = sampling_for(variant, thinking, self.info.quantized)
        prompt = build_prompt(self.template, [Turn("user", text)], enable_thinking=thinking)
        tokens = self.llm.tokenize(prompt.encode(), add_bos=False, special=True)
        first = last = 0.0
        count = 0
        for _chunk in self.llm.create_completion(
                prompt=tokens, max_tokens=min(max_tokens, sampling.max_tokens), temperature=sampling.temperature,
                top_p=sampling.top_p, top_k=sampling.top_k, min_p=sampling.min_p,
                presence_penalty=sampling.presence_penalty, frequency_penalty=0.0, repeat_penalty=1.0, stream=True):
            now = time.perf_counter()
            first = first or now
            last = now
            count += 1
        return (count - 1) / (last - first) if count > 1 and last > first else 0.0
