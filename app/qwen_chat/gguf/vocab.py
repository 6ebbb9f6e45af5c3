"""Whether two GGUF models share one vocabulary, so that one can draft tokens for the other.

Token ids pass between the two models unchanged, so they must mean the same text. Checked from the headers, in
milliseconds: the tokenizer (`tokenizer.ggml.model`, `.pre`), the number of tokens, the end-of-generation and
begin ids, and the text of a sample of tokens: spread over the whole list, plus the added tokens after the
end-of-text token, where related vocabularies differ (Qwen2.5's 151,936 tokens are Qwen3's but for ids
151,665-151,668, which Qwen3 uses for <tool_response>, </tool_response>, <think>, </think>). A mismatch the
sample misses would only make drafts wrong, never answers: the decode loop checks every drafted token.
"""

from __future__ import annotations

from pathlib import Path

from qwen_chat.gguf.files import ModelFileError, ModelInfo
from qwen_chat.gguf.header import HeaderError, read_header
from qwen_chat.system.printable import printable

_SPREAD = 512  # tokens sampled across the whole list
_ADDED = 96  # tokens read after the end-of-text token (Qwen's added tokens follow it)


def vocabulary_mismatch(target: ModelInfo, draft: ModelInfo) -> str | None:
    """Why `draft`'s token ids do not mean what `target`'s do, in one line; None when they agree."""
    first, second = target.headers[0].metadata, draft.headers[0].metadata
    for key, what in (("tokenizer.ggml.model", "tokenizer"), ("tokenizer.ggml.pre", "pre-tokenizer")):
        if first.get(key) != second.get(key):
            return (f"another {what} ({_shown(second.get(key))}; the model's is {_shown(first.get(key))})")
    if target.n_vocab != draft.n_vocab:
        return f"another vocabulary ({draft.n_vocab:,} tokens; the model has {target.n_vocab:,})"
    for key, what in (("tokenizer.ggml.eos_token_id", "end-of-text token"),
                      ("tokenizer.ggml.bos_token_id", "begin token")):
        if first.get(key) != second.get(key):
            return f"another {what} (id {_shown(second.get(key))}; the model's is {_shown(first.get(key))})"
    ids = sample_ids(target.n_vocab, first.get("tokenizer.ggml.eos_token_id"))
    mine, theirs = token_texts(target.path, ids), token_texts(draft.path, ids)
    for token in sorted(ids):
        if mine.get(token) != theirs.get(token):
            return (f"another vocabulary of the same size (token {token:,} is {_shown(theirs.get(token))}; in the "
                    f"model it is {_shown(mine.get(token))})")
    return None


def sample_ids(size: int, eos: object) -> set[int]:
    """The token ids compared: a spread over the list, its last few, and the added tokens after end-of-text."""
    ids = set(range(0, size, max(1, size // _SPREAD))) | set(range(max(0, size - 8), size))
    if isinstance(eos, int) and 0 <= eos < size:
        ids |= set(range(max(0, eos - 8), min(size, eos + _ADDED)))
    return ids


def token_texts(path: Path, ids: set[int]) -> dict[int, str]:
    """The text of the tokens `ids` in the file's `tokenizer.ggml.tokens` (the rest of the list is skipped)."""
    try:
        with path.open("rb") as f:
            tokens = read_header(f, ids).metadata.get("tokenizer.ggml.tokens")
    except (OSError, HeaderError) as exc:
        raise ModelFileError(f"cannot read the vocabulary of {path.name}: {exc}") from None
    if isinstance(tokens, list):  # a short list is read whole
        return {i: text for i, text in enumerate(tokens) if i in ids}
    return dict(tokens) if isinstance(tokens, dict) else {}


def _shown(value: object) -> str:
    return repr(printable(str(value))) if value is not None else "none"
