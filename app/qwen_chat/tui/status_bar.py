"""The status line under the chat: model, thinking mode and budget meter, speed, context use, plan, state."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from qwen_chat.session.chat import ChatSession
from qwen_chat.tui.printable import printable_line


class StatusBar(Static):
    def __init__(self) -> None:
        super().__init__("", id="status", markup=False)
        self.mode = ""
        self.state = "starting"
        self.last_speed = 0.0
        self.thinking_tokens = 0  # of the answer being written, or the last one (the budget meter)
        self.budget = 0

    def show(self, session: ChatSession) -> None:
        model = session.model
        parts = [model.model_name] + ([self.mode] if self.mode else [])
        if self.thinking_tokens:
            verb = "thinking" if session.generating else "thought"
            parts.append(f"{verb} {self.thinking_tokens:,}/{self.budget:,}" if self.budget
                         else f"{verb} {self.thinking_tokens:,} tokens")
        if self.last_speed and not session.generating:
            parts.append(f"{self.last_speed:.1f} tok/s")
        if model.n_ctx:
            share = model.context_used / model.n_ctx
            parts.append(f"ctx {model.context_used:,}/{model.n_ctx:,} ({share:.0%})")
        if model.plan is not None and model.ready:
            parts.append(model.plan.short(model.gpu_layers))
        parts.append(self.state)
        # the model's name is a file name or what a server calls it, and the state may quote an error:
        # either may hold control characters, drawn as symbols instead of reaching the terminal
        self.update(Text(printable_line("  │  ".join(parts))))
