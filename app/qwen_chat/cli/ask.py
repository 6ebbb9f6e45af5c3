"""`qwen-chat ask "..."`: one answer, streamed to stdout, for scripts and pipes; from a local model or an
endpoint, with the MCP servers' tools when there are any. Thinking goes to stderr only when asked for.

It is the chat's own path: a ChatSession loads the model (the remembered GPU layers, the retry with one layer
fewer when the GPU runs out of memory) and answers, on a throwaway database, so nothing is kept and the user's
database is never opened.
"""

from __future__ import annotations

import os
import queue
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from qwen_chat.cli.ask_tools import Asker, AskTools, decide, open_hub
from qwen_chat.cli.output import is_terminal
from qwen_chat.config.tool_settings import load_tool_settings
from qwen_chat.engines.protocol import Done, Failed, Loaded, Token
from qwen_chat.qwen3.thinking import Part
from qwen_chat.session.chat import ChatSession
from qwen_chat.session.events import AnswerSaved, AnswerStarted, Notice, SessionEvent, ToolApprovalNeeded, ToolLoopEnded
from qwen_chat.session.sources import LocalModel, Server
from qwen_chat.session.tool_loop import Decision
from qwen_chat.store.database import Store
from qwen_chat.system.printable import printable

# Without --ctx, ask without tools loads at most this context: one question needs little, and a small context
# loads quickly; with tools the planner chooses, as in the chat (results and further steps need the room).
ASK_CONTEXT = 8192

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


def planned(model: Path, n_ctx: int | None, with_tools: bool) -> LocalModel:
    """The model file read and planned once, here: the session loads this plan as it is. Raises ModelFileError,
    TemplateRenderError or DoesNotFit."""
    from qwen_chat.gguf.files import read_model_info
    from qwen_chat.session.model_loading import prepare_info
    from qwen_chat.system.hardware import detect

    info = read_model_info(model)
    if n_ctx is None and not with_tools:
        n_ctx = min(ASK_CONTEXT, info.context_length)
    return LocalModel(model, n_ctx, prepare_info(info, n_ctx, detect()))


def ask(source: LocalModel | Server, question: str, *, think: bool | None = None, show_thinking: bool = False,
        seed: int | None = None, tools: AskTools | None = None, asker: Asker | None = None,
        out: TextIO | None = None, err: TextIO | None = None, verbose: bool = False) -> int:
    """One answer (its tool loop included, with `tools`), streamed to `out`, thinking to `err` when asked for.
    `seed` (--seed) makes it repeatable. `verbose` (--verbose): each answer's speeds and drafting to `err`.
    Returns the exit status (0 answered, 1 failed); Ctrl-C stops the answer
    and is passed on (main says so in one line and exits 130)."""
    out, err = out or sys.stdout, err or sys.stderr  # looked up now: tests and callers swap them
    hub = open_hub(tools, err) if tools is not None else None
    approve: Callable[[ToolApprovalNeeded], Decision] = (
        (lambda event: decide(event, tools, asker, err)) if tools is not None else (lambda event: "deny"))
    events: queue.Queue[SessionEvent] = queue.Queue()
    try:
        with tempfile.TemporaryDirectory(prefix="qwen-chat-ask-") as folder:
            store = Store(Path(folder) / "ask.db")
            session = ChatSession(store, events.put, source=source, tools=hub,
                                  tool_settings=tools.settings if tools is not None else load_tool_settings)
            session.seed = seed  # every step of a tool loop samples with it
            try:
                return _run(session, question, think, events, approve, out, err if show_thinking else None, err,
                            err if verbose else None)
            except KeyboardInterrupt:
                session.stop()
                raise
            finally:
                session.close()
                store.close()
    finally:
        if hub is not None:
            hub.close()


def _run(session: ChatSession, question: str, think: bool | None, events: queue.Queue[SessionEvent],
         approve: Callable[[ToolApprovalNeeded], Decision], out: TextIO, thinking: TextIO | None,
         err: TextIO, stats: TextIO | None = None) -> int:
    session.open()
    if not wait_loaded(events, err):
        return 1
    plan, info = session.model.plan, session.model.info
    if plan is not None and info is not None:  # a local model: the advice names --ctx, not F7
        session.context_hint = (f"ask again with a larger context: --ctx N (this run had {plan.n_ctx:,} "
                                f"tokens; the model reads up to {info.context_length:,})")
    # a script's question is the whole prompt: no persona; thinking unless --no-think, and never cut short
    conversation = session.store.create_conversation(model=session.model.model_name, enable_thinking=think is not False)
    session.store.set_thinking_budget(conversation.id, 0)
    session.send(conversation.id, question, plain=True)
    begun = False
    while True:
        event = events.get()
        if isinstance(event, AnswerStarted):  # each step of a tool loop is an answer of its own
            begun = False
        elif isinstance(event, Token):
            begun = _write(event, out, thinking, begun)
        elif isinstance(event, ToolApprovalNeeded):
            session.decide(event.call.id, approve(event))
        elif isinstance(event, AnswerSaved):
            if stats is not None and event.done is not None:  # each answer of a tool loop: after its text
                stats.write(f"\nqwen-chat: {speeds(event.done)}\n")
            if event.ends_turn:
                return _ended(event, out, err)
        elif isinstance(event, ToolLoopEnded):  # stopped, or too many rounds: the reason came as a Notice
            out.write("\n")
            return 1
        elif isinstance(event, Notice) and event.error:
            err.write(f"qwen-chat: {event.text}\n")


def _write(event: Token, out: TextIO, thinking: TextIO | None, begun: bool) -> bool:
    """One token: the answer to `out`, the thinking to `thinking` when it is shown, a tool call's text nowhere.
    Returns whether the answer's text has begun."""
    text = event.text
    if event.part is Part.ANSWER and not begun:
        text = text.lstrip("\n")  # servers start the answer after the thinking with blank lines
        begun = bool(text)
    stream = out if event.part is Part.ANSWER else thinking if event.part is Part.THINKING else None
    if stream is not None and text:
        # on a terminal the model's control characters are shown, not obeyed, as in the app
        stream.write(printable(text) if is_terminal(stream) else text)
        stream.flush()
    return begun


def _ended(event: AnswerSaved, out: TextIO, err: TextIO) -> int:
    if event.message.status == "failed":
        err.write(f"qwen-chat: {event.message.error}\n")
        return 1
    out.write("\n")
    return 0


def speeds(done: Done) -> str:
    """One answer's speeds (and speculative decoding's figures, from a local model) in words, for --verbose."""
    prompt = (f"prompt {done.prompt_tokens:,} tokens, {done.prompt_evaluated:,} evaluated"
              + (f" at {done.prompt_evaluated / done.prompt_seconds:,.1f} tok/s" if done.prompt_seconds > 0 else ""))
    answer = f"answer {done.completion_tokens:,} tokens at {done.tokens_per_second:,.1f} tok/s"
    drafting = f"; {done.drafting.describe()}" if done.drafting is not None else ""
    return f"{prompt}; {answer}{drafting}"


def wait_loaded(events: queue.Queue[Any], err: TextIO) -> bool:
    """Wait for the load to end (a retry with fewer GPU layers included); a failure is said on `err`."""
    while True:
        event = events.get()
        if isinstance(event, Loaded):
            return True
        if isinstance(event, Failed):
            err.write(f"qwen-chat: {event.message}\n")
            return False
