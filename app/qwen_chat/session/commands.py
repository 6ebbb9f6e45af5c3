"""The chat's own commands that are not about thinking on or off: `/budget` and `/context` (their replies).

/think and /no_think are Qwen3's soft switches (qwen3/template.py); the session applies them.
"""

from __future__ import annotations

from dataclasses import dataclass

from qwen_chat.qwen3.sampling import MAX_THINKING_BUDGET
from qwen_chat.qwen3.template import Variant
from qwen_chat.session.events import Notice


@dataclass(frozen=True)
class BudgetReply:
    budget: int | None  # the budget to store, or None: nothing changes
    notice: Notice


def split_command(text: str) -> tuple[str, str]:
    """("/budget", "2048") for "/budget 2048"; the word is lower-case, ("", "") when it is no such command."""
    word, _, argument = text.strip().partition(" ")
    word = word.lower()
    return (word, argument.strip()) if word in ("/budget", "/context") else ("", "")


def budget_reply(argument: str, variant: Variant, model_name: str, current: int, remote: bool) -> BudgetReply:
    """What `/budget ARGUMENT` does: shows the budget (no argument), sets one, or says why it cannot."""
    if variant is Variant.NO_THINKING:
        return BudgetReply(None, Notice(f"{model_name or 'This model'} does not think, so a thinking budget does "
                                        "not apply.", error=True))
    word = argument.lower().replace(",", "").replace("_", "")
    if not word:
        return BudgetReply(None, Notice(f"Thinking budget: {current:,} tokens." if current else
                                        "No thinking budget. Set one with /budget N (tokens), e.g. /budget 2048."))
    if word in ("off", "none", "0"):
        budget = 0
    elif word.isdigit() and int(word) <= MAX_THINKING_BUDGET:
        budget = int(word)
    else:
        return BudgetReply(None, Notice(f"/budget takes a number of tokens from 1 to {MAX_THINKING_BUDGET:,}, or "
                                        f"off (got {argument!r}).", error=True))
    if remote and budget:
        return BudgetReply(budget, Notice(
            f"Thinking budget set to {budget:,} tokens, but it only applies to local models: a server caps "
            "thinking with its own settings (llama-server --reasoning-budget).", error=True))
    return BudgetReply(budget, Notice(f"Thinking budget: {budget:,} tokens; after that the model is told to answer."
                                      if budget else "Thinking budget off: the model thinks as long as it needs."))
