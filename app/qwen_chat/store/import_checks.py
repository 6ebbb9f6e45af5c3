"""Every field an imported export holds, checked before anything is written.

An export file may have been edited by hand, cut short or written by something else, so nothing in it is
trusted: each value is checked for its type and its range here, and the import either gets a fully valid
`Imported` or a StoreError that names the field. Checking it all first is what keeps an import whole: the
store writes a conversation message by message, and a refusal halfway would leave half of it behind.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from qwen_chat.store.records import TOOL_STATUSES, Attachment, Stats, StoreError
from qwen_chat.store.tool_calls import NewCall

# What an import accepts. A conversation qwen-chat exported stays far below these; a file beyond them is a
# mistake or an attack, and a message of tens of MB would make the app take most of a minute to show it.
MAX_FILE_BYTES = 32 << 20  # 32 MiB per file
MAX_TEXT_CHARS = 1 << 20  # 1,048,576 characters per message, thinking or system prompt: more than 262,144 tokens,
# the longest Qwen3 context, can hold
MAX_TITLE_CHARS = 1000
MAX_NAME_CHARS = 1000  # a model, mode, file, tool, server or call id: names, never texts
MAX_MESSAGES = 100_000  # each is its own write; far more than any conversation a context window follows
# a byte-level tokenizer's token is at least one UTF-8 byte and a character at most four, so no count of a
# file's tokens can be above four per character
TOKENS_PER_CHAR = 4
# an answer's tokens: its text and its thinking, at most MAX_TEXT_CHARS each, at most four tokens a character
MAX_ANSWER_TOKENS = 2 * TOKENS_PER_CHAR * MAX_TEXT_CHARS
MAX_RATE = 1e9  # tokens per second: no machine comes near; beyond it the number is a mistake, not a measurement
NOTHING = "nothing was imported"
_SURROGATE = re.compile("[\ud800-\udfff]")  # JSON's \ud800 escapes give them; UTF-8 (and SQLite) cannot hold one
ANSWER_STATUSES = ("stopped", "failed", "interrupted")  # any other status, or none, comes back complete


@dataclass(frozen=True)
class Question:
    content: str
    files: tuple[Attachment, ...]


@dataclass(frozen=True)
class Answer:
    content: str
    thinking: str
    model: str
    mode: str
    sampling: dict[str, Any]
    status: str
    calls: list[NewCall]
    stats: Stats


@dataclass(frozen=True)
class Imported:
    title: str
    model: str
    system_prompt: str
    messages: list[Question | Answer]


def shown(value: Any) -> str:
    """A value from the file as a message shows it: as JSON, and short (the file may hold megabytes there)."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _text(where: str, value: Any, default: str | None = None, limit: int = MAX_TEXT_CHARS) -> str:
    """A text field; missing or null is `default` where there is one (older and hand-written exports leave
    fields out), anything else that is not a text is refused."""
    if value is None and default is not None:
        return default
    if not isinstance(value, str):
        raise StoreError(f"{where} must be a text, not {shown(value)}; {NOTHING}")
    if len(value) > limit:
        why = " (more than the longest Qwen3 context holds)" if limit == MAX_TEXT_CHARS else ""
        raise StoreError(f"{where} is {len(value):,} characters; at most {limit:,} are imported{why}. "
                         "Nothing was imported.")
    return value


def _whole(where: str, value: Any, top: int) -> int:
    """A count: a JSON integer from 0 to `top`. true, 1.5, 1e400, NaN or "3" are refused: int() would turn
    some into a number nobody wrote and fail on the others."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise StoreError(f"{where} must be a whole number from 0 to {top:,}, not {shown(value)}; {NOTHING}")
    return value


def _rate(where: str, value: Any) -> float:
    """A rate: a JSON number from 0 to MAX_RATE. NaN fails every comparison and Infinity (or 1e400) the upper
    bound, so neither passes; true, "fast" and "3" are refused by type."""
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_RATE:
        raise StoreError(f"{where} must be a number from 0 to {MAX_RATE:,.0f}, not {shown(value)}; {NOTHING}")
    return float(value)


def _moment(where: str, value: Any) -> None:
    """A time as the export writes it (ISO 8601, e.g. 2025-01-31T12:00:00+00:00). Not stored (the import is
    dated now), but checked all the same: a file whose dates are "yesterday" or 1e400 is not an export."""
    if value is None:
        return
    if isinstance(value, str) and len(value) <= 64:
        try:
            datetime.fromisoformat(value.removesuffix("Z") + ("+00:00" if value.endswith("Z") else ""))
            return
        except ValueError:
            pass
    raise StoreError(f"{where} must be a date and time like 2025-01-31T12:00:00+00:00, not {shown(value)}; "
                     f"{NOTHING}")


def _flag(where: str, value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise StoreError(f"{where} must be true or false, not {shown(value)}; {NOTHING}")


def _sampling(where: str, value: Any) -> dict[str, Any]:
    """The sampling an answer was made with: names to numbers (a seed may be null). A NaN or Infinity stored
    here would come back out of the next export as JSON no other program reads."""
    sampling = _object(where, value)
    for name, number in sampling.items():
        finite = isinstance(number, int) or isinstance(number, float) and math.isfinite(number)
        if number is not None and (isinstance(number, bool) or not finite):
            raise StoreError(f"{where}: {shown(name)} must be a finite number, not {shown(number)}; {NOTHING}")
    return sampling


def _object(where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise StoreError(f"{where} must be an object, not {shown(value)}; {NOTHING}")
    return value


def _list(where: str, value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise StoreError(f"{where} must be a list, not {shown(value)}; {NOTHING}")
    return value


def check_unicode(data: Any) -> None:
    """Refuse a lone surrogate in any text or key: Python holds one, SQLite cannot store it (UTF-8 has none)."""
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            found = _SURROGATE.search(value)
            if found:
                raise StoreError(f"the export holds a lone surrogate (\\u{ord(found.group()):04x}), which is not "
                                 f"text any file can hold; {NOTHING}")
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def checked(data: dict[str, Any]) -> Imported:
    """The conversation an export holds, every field checked (see the module docstring)."""
    check_unicode(data)
    title = _text("the title", data.get("title"), "", MAX_TITLE_CHARS).strip() or "Imported chat"
    raw = data.get("messages")
    if not isinstance(raw, list):
        raise StoreError(f"the export's messages must be a list, not {shown(raw)}; {NOTHING}")
    if len(raw) > MAX_MESSAGES:
        raise StoreError(f"the export has {len(raw):,} messages; at most {MAX_MESSAGES:,} are imported")
    _moment("the export's created_at", data.get("created_at"))
    messages = [_message(number, m) for number, m in enumerate(raw, 1)]
    return Imported(title, _text("the model", data.get("model"), "", MAX_NAME_CHARS),
                    _text("the system prompt", data.get("system_prompt"), ""), messages)


def _message(number: int, m: Any) -> Question | Answer:
    if not isinstance(m, dict) or m.get("role") not in ("user", "assistant") or not isinstance(m.get("content"), str):
        raise StoreError("the export's messages must each have a role (user or assistant) and a text content "
                         f"(message {number} has not); {NOTHING}")
    where = f"message {number}"
    content = _text(where, m["content"])
    _moment(f"{where}'s created_at", m.get("created_at"))
    if m["role"] == "user":
        return Question(content, _files(where, m.get("attachments")))
    status = m.get("status")
    stats = Stats(completion_tokens=_whole(f"{where}'s completion_tokens", m.get("completion_tokens"),
                                           MAX_ANSWER_TOKENS),
                  tokens_per_second=_rate(f"{where}'s tokens_per_second", m.get("tokens_per_second")))
    return Answer(content, _text(f"{where}'s thinking", m.get("thinking"), ""),
                  _text(f"{where}'s model", m.get("model"), "", MAX_NAME_CHARS),
                  _text(f"{where}'s mode", m.get("mode"), "", MAX_NAME_CHARS),
                  _sampling(f"{where}'s sampling", m.get("sampling")),
                  status if isinstance(status, str) and status in ANSWER_STATUSES else "complete",
                  _calls(where, m.get("tool_calls")), stats)


def _files(where: str, raw: Any) -> tuple[Attachment, ...]:
    files = []
    for number, a in enumerate(_list(f"{where}'s attachments", raw), 1):
        if not isinstance(a, dict):
            raise StoreError(f"{where}'s attachment {number} must be an object with a name and a text content, "
                             f"not {shown(a)}; {NOTHING}")
        name = _text(f"{where}'s attachment {number}'s name", a.get("name"), limit=MAX_NAME_CHARS)
        file = f"{where}'s file {name!r}"
        content = _text(file, a.get("content"))
        files.append(Attachment(name, content, _whole(f"{file}: tokens", a.get("tokens"),
                                                      TOKENS_PER_CHAR * len(content))))
    return tuple(files)


def _calls(where: str, raw: Any) -> list[NewCall]:
    """An answer's tool calls. A call that was pending or running when exported comes back interrupted: no
    import ever leaves a call waiting to run; a status this qwen-chat does not know reads as interrupted too."""
    calls = []
    for number, c in enumerate(_list(f"{where}'s tool calls", raw), 1):
        if not isinstance(c, dict):
            raise StoreError(f"{where}'s tool call {number} must be an object with a name, not {shown(c)}; "
                             f"{NOTHING}")
        name = _text(f"{where}'s tool call {number}'s name", c.get("name"), limit=MAX_NAME_CHARS)
        call = f"{where}'s tool call {name!r}"
        status = c.get("status")
        status = status if isinstance(status, str) and status in TOOL_STATUSES else "interrupted"
        _flag(f"{call}: truncated", c.get("truncated"))
        calls.append(NewCall(_text(f"{call}: id", c.get("id"), "", MAX_NAME_CHARS) or f"call_{number - 1}", name,
                             _object(f"{call}: arguments", c.get("arguments")), "",
                             "interrupted" if status in ("pending", "running") else status,
                             _text(f"{call}: result", c.get("result"), ""),
                             _text(f"{call}: server", c.get("server"), "", MAX_NAME_CHARS)))
    return calls
