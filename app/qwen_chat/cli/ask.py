"""`qwen-chat ask "..."`: one answer, streamed to stdout, for scripts and pipes. Thinking goes to stderr only
when asked for; nothing is stored."""

from __future__ import annotations

import queue
import sys
from pathlib import Path
from typing import TextIO

from qwen_chat.config.presets import sampling_for
from qwen_chat.engines.llama import Engine
from qwen_chat.engines.protocol import Done, EngineEvent, Failed, GenerateRequest, Loaded, LoadRequest, Token
from qwen_chat.models.gguf_files import read_model_info
from qwen_chat.qwen3.template import ChatTemplate, Turn, build_prompt, effective_thinking, prompt_opens_thinking
from qwen_chat.qwen3.thinking import Part
from qwen_chat.system.hardware import detect


def ask(model: Path, question: str, *, think: bool | None = None, show_thinking: bool = False,
        n_ctx: int | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    from qwen_chat.session.model_loading import plan_for_file

    info = read_model_info(model)
    template = ChatTemplate(info.chat_template, info.bos_token, info.eos_token)
    plan = plan_for_file(info, template.variant, detect(), n_ctx or min(8192, info.context_length))
    enable = True if think is None else think
    thinking = effective_thinking(template.variant, enable, [question])
    prompt = build_prompt(template, [Turn("user", question)], enable_thinking=enable)
    events: queue.Queue[EngineEvent] = queue.Queue()
    engine = Engine(events.put).start()
    try:
        engine.load(LoadRequest(info.path, plan.n_ctx, plan.n_gpu_layers, n_cpu_moe=plan.n_cpu_moe,
                                kv_type=plan.kv_type, flash_attn=plan.flash_attn, yarn_factor=plan.yarn_factor))
        if not _wait_loaded(events, err):
            return 1
        sampling = sampling_for(template.variant, thinking, info.quantized, plan.n_ctx)
        engine.generate(GenerateRequest(1, prompt, sampling, prompt_opens_thinking(prompt)))
        while True:
            event = events.get()
            if isinstance(event, Token):
                if event.part is Part.ANSWER:
                    out.write(event.text)
                    out.flush()
                elif show_thinking:
                    err.write(event.text)
                    err.flush()
            elif isinstance(event, Done):
                out.write("\n")
                return 0
            elif isinstance(event, Failed):
                err.write(f"qwen-chat: {event.message}\n")
                return 1
    except KeyboardInterrupt:
        engine.stop()
        return 130
    finally:
        engine.shutdown()


def _wait_loaded(events: queue.Queue[EngineEvent], err: TextIO) -> bool:
    while True:
        event = events.get()
        if isinstance(event, Loaded):
            return True
        if isinstance(event, Failed):
            err.write(f"qwen-chat: {event.message}\n")
            return False
