"""The slash commands typed alone in the composer: one table for the help screen (F1, /help), the composer's
completion and the check that catches a mistyped command before it is sent to the model.

The session handles /think, /no_think, /budget and /context (session/chat.py); the composer panel handles /file,
/tools and /help (sending.py). Nothing here imports Textual: it is plain text in, text out.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class SlashCommand:
    name: str  # "/budget"
    usage: str  # what may follow it, "" for nothing: "[N | off]"
    about: str
    choices: tuple[str, ...] = ()  # fixed words that may follow it, completed like the name


SLASH_COMMANDS: tuple[SlashCommand, ...] = (
    SlashCommand("/help", "", "these keys and commands (also F1); never sent to the model"),
    SlashCommand("/think", "", "thinking on for this conversation; inside a message, Qwen3's soft switch"),
    SlashCommand("/no_think", "", "thinking off for this conversation; inside a message, Qwen3's soft switch"),
    SlashCommand("/budget", "[N | off]", "the thinking budget in tokens; alone, shows it", ("off",)),
    SlashCommand("/context", "[KEY]", "reload with another context size; alone, shows it and the keys",
                 ("auto", "native", "64k", "128k", "256k")),
    SlashCommand("/file", "PATH | clear", "attach a text file to the next message (also Ctrl+O)", ("clear",)),
    SlashCommand("/tools", "", "the MCP tools panel (also F9)"),
)
NAMES = tuple(command.name for command in SLASH_COMMANDS)
_COMMAND_LIKE = re.compile(r"/[A-Za-z_][A-Za-z0-9_-]*")  # "/hlep", never a path such as /usr/bin or a URL


def _takes_argument(command: SlashCommand) -> bool:
    return bool(command.usage)


def matches(typed: str) -> list[SlashCommand]:
    """The commands whose name starts with `typed` ("/t" -> /think, /tools); none unless it starts with /."""
    word = typed.lower()
    return [command for command in SLASH_COMMANDS if word.startswith("/") and command.name.startswith(word)]


def completion(text: str) -> str:
    """What would complete `text` (the whole draft, the cursor at its end): the rest of the first command it
    starts (with a space when the command takes an argument), or of one of the command's fixed words; "" for
    nothing. A draft of more than one line, or with text after a full command, is a message: nothing."""
    if "\n" in text or not text.startswith("/"):
        return ""
    word, space, argument = text.partition(" ")
    if not space:
        found = matches(word)
        if not found or (found[0].name == word.lower() and not _takes_argument(found[0])):
            return ""
        return found[0].name[len(word):] + (" " if _takes_argument(found[0]) else "")
    typed = next((c for c in SLASH_COMMANDS if c.name == word.lower()), None)
    if typed is None or " " in argument:
        return ""
    choice = next((c for c in typed.choices if argument and c.startswith(argument.lower())), "")
    return choice[len(argument):]


def candidates_hint(text: str) -> str:
    """The commands a draft of "/" and a few letters could become, for the line under the composer."""
    if "\n" in text or " " in text or not text.startswith("/"):
        return ""
    found = matches(text)
    if not found or (len(found) == 1 and found[0].name == text.lower()):
        return ""
    return " ".join(command.name for command in found) + " · Tab completes"


def unknown_command(text: str) -> str | None:
    """The word of a draft that starts like a command but is none of ours ("/hlep" in "/hlep me"), or None.
    A path ("/usr/bin is…") or anything after a known command is not one."""
    first = text.strip().split(maxsplit=1)[0] if text.strip() else ""
    if not _COMMAND_LIKE.fullmatch(first) or first.lower() in NAMES:
        return None
    return first


def unknown_message(word: str) -> str:
    """What to tell the user about an unknown `/word`: the nearest command, and how to send it anyway."""
    near = difflib.get_close_matches(word.lower(), NAMES, n=1, cutoff=0.6)
    hint = f"Did you mean {near[0]}? " if near else ""
    return (f"{word} is not a qwen-chat command. {hint}/help lists them. Press Enter again to send it to the "
            "model as it is.")
