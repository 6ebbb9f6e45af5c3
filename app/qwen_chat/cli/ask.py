"""`qwen-chat ask "..."`: one answer, streamed to stdout, for scripts and pipes; from a local model or an
endpoint. Thinking goes to stderr only when asked for; nothing is stored."""

from __future__ import annotations

import os
import queue
import stat
import sys
from pathlib import Path
from typing import Any, TextIO

from qwen_chat.cli.output import is_terminal
from qwen_chat.config.presets import sampling_for
from qwen_chat.engines.protocol import (
    ChatEngine,
    Done,
    EngineEvent,
    Failed,
    GenerateRequest,
    Loaded,
    LoadRequest,
    Token,
)
from qwen_chat.qwen3.template import Variant
from qwen_chat.qwen3.thinking import Part
from qwen_chat.system.printable import printable

# More than any Qwen3 context can read (262,144 tokens are about 1 MB of text): a larger stdin is a mistake
# (a binary file, `yes |`), and reading it all would only fill the memory.
STDIN_LIMIT = 16 << 20


class AskInputError(Exception):
    """No usable question; the message says what to do."""


def question_from(argument: str | None, stdin: TextIO | None) -> str:
    """The text to ask: the argument, then (after a blank line) whatever is piped into stdin; stdin alone when
    the argument is omitted or '-'."""
    wants_stdin = argument in (None, "-")
    if wants_stdin and (stdin is None or stdin.closed):
        raise AskInputError('no question: stdin is closed. Give it as an argument: qwen-chat ask "question", '
                            'or pipe text in: echo "question" | qwen-chat ask')
    piped = _read(stdin) if stdin is not None and (wants_stdin or _is_piped(stdin)) else ""
    parts = [text.strip() for text in ("" if wants_stdin else argument or "", piped)]
    question = "\n\n".join(part for part in parts if part)
    if not question:
        raise AskInputError('nothing to ask: the question is empty. qwen-chat ask "question", or pipe text in')
    return question


def _is_piped(stream: TextIO) -> bool:
    """A pipe, a file or a socket on stdin (`cmd | qwen-chat ask`, `< file`); not a terminal, /dev/null or a
    stand-in without a file descriptor, which are never read when a question is given."""
    try:
        mode = os.fstat(stream.fileno()).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode)


def _read(stream: TextIO) -> str:
    """At most STDIN_LIMIT bytes: more, or an endless stdin (`< /dev/zero`, `yes |`), is refused after reading
    STDIN_LIMIT + 1 bytes, never read to its end."""
    try:
        # a stand-in without bytes (a StringIO) is bounded the same way, in characters: each is a byte or more
        raw = (stream.buffer.read(STDIN_LIMIT + 1) if hasattr(stream, "buffer")
               else stream.read(STDIN_LIMIT + 1).encode())
    except OSError as exc:
        raise AskInputError(f"cannot read stdin: {exc.strerror or exc}") from None
    if b"\0" in raw[:8192]:  # checked first: /dev/zero is both too long and not text, and "not text" is the news
        raise AskInputError("stdin is binary data, not text (it holds NUL bytes, like /dev/zero or a program file): "
                            "ask takes text")
    if len(raw) > STDIN_LIMIT:
        raise AskInputError(f"stdin holds more than {STDIN_LIMIT >> 20} MiB, more than any Qwen3 context can read; "
                            "pass a shorter text (head -c, or the part that matters)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AskInputError(f"stdin is not UTF-8 text (byte {exc.start:,} is not valid): ask takes text") from None


def ask(model: Path, question: str, *, think: bool | None = None, show_thinking: bool = False,
        n_ctx: int | None = None, seed: int | None = None, out: TextIO | None = None,
        err: TextIO | None = None) -> int:
    """One answer from a local GGUF file; `seed` (--seed) makes it repeatable: the same seed and question give
    the same answer."""
    from qwen_chat.engines.llama import Engine
    from qwen_chat.gguf.files import read_model_info
    from qwen_chat.qwen3.template import ChatTemplate, Turn, build_prompt, effective_thinking, prompt_opens_thinking
    from qwen_chat.session.model_loading import plan_for_file
    from qwen_chat.system.hardware import detect

    info = read_model_info(model)
    template = ChatTemplate(info.chat_template, info.bos_token, info.eos_token)
    plan = plan_for_file(info, template.variant, detect(), n_ctx or min(8192, info.context_length))
    enable = True if think is None else think
    thinking = effective_thinking(template.variant, enable, [question])
    prompt = build_prompt(template, [Turn("user", question)], enable_thinking=enable)
    events: queue.Queue[EngineEvent] = queue.Queue()
    load = LoadRequest(info.path, plan.n_ctx, plan.n_gpu_layers, n_cpu_moe=plan.n_cpu_moe, kv_type=plan.kv_type,
                       flash_attn=plan.flash_attn, yarn_factor=plan.yarn_factor)
    sampling = sampling_for(template.variant, thinking, info.quantized, plan.n_ctx, seed=seed)
    hint = (f"ask again with a larger context: --ctx N (this run had {plan.n_ctx:,} tokens; the model reads up "
            f"to {info.context_length:,})")
    request = GenerateRequest(1, prompt, sampling, prompt_opens_thinking(prompt), context_hint=hint)
    return _answer(Engine(events.put), events, load, request, show_thinking, out, err)


def ask_endpoint(url: str, api_key: str | None, model: str | None, question: str, *, think: bool | None = None,
                 show_thinking: bool = False, seed: int | None = None, out: TextIO | None = None,
                 err: TextIO | None = None) -> int:
    """One answer from an OpenAI-compatible server, sent the way the chat sends it (a served Qwen3 is hybrid:
    thinking on unless --no-think, through chat_template_kwargs)."""
    from qwen_chat.engines.http import RemoteEngine

    enable = True if think is None else think
    events: queue.Queue[EngineEvent] = queue.Queue()
    request = GenerateRequest(1, "", sampling_for(Variant.HYBRID, enable, False, seed=seed),
                              messages=({"role": "user", "content": question},), enable_thinking=enable)
    engine = RemoteEngine(events.put, url, api_key, model)
    return _answer(engine, events, LoadRequest(Path(url), 0), request, show_thinking, out, err)


def _answer(engine: ChatEngine, events: queue.Queue[EngineEvent], load: LoadRequest, request: GenerateRequest,
            show_thinking: bool, out: TextIO | None, err: TextIO | None) -> int:
    """Load, generate, stream the answer to `out` (thinking to `err` when asked). Ctrl-C stops the engine and is
    passed on (main says so in one line and exits 130)."""
    out, err = out or sys.stdout, err or sys.stderr  # looked up now: tests and callers swap them
    engine.start()
    try:
        engine.load(load)
        if not wait_loaded(events, err):
            return 1
        engine.generate(request)
        answer_started = False
        while True:
            event = events.get()
            if isinstance(event, Token):
                text = event.text
                if event.part is Part.ANSWER and not answer_started:
                    text = text.lstrip("\n")  # servers start the answer after the thinking with blank lines
                    answer_started = bool(text)
                stream = out if event.part is Part.ANSWER else err if show_thinking else None
                if stream is not None and text:
                    # on a terminal the model's control characters are shown, not obeyed, as in the app
                    stream.write(printable(text) if is_terminal(stream) else text)
                    stream.flush()
            elif isinstance(event, Done):
                out.write("\n")
                return 0
            elif isinstance(event, Failed):
                err.write(f"qwen-chat: {event.message}\n")
                return 1
    except KeyboardInterrupt:
        engine.stop()
        raise
    finally:
        engine.shutdown()


def wait_loaded(events: queue.Queue[Any], err: TextIO) -> bool:
    """Wait for the load to end; a failure is said on `err` (also `ask` with tools, whose queue holds session
    events)."""
    while True:
        event = events.get()
        if isinstance(event, Loaded):
            return True
        if isinstance(event, Failed):
            err.write(f"qwen-chat: {event.message}\n")
            return False
