"""Which files of a hub repo are a catalog quant: the catalog's paths when the repo has them, else (for entries
whose paths are only a guess at a community repo's naming, `estimated: true`) the files the listing names
`<stem>-<QUANT>.gguf` or `<stem>-<QUANT>-0000k-of-0000n.gguf`. The listing's sizes are the truth either way."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import PurePosixPath

from qwen_chat.catalog.entries import Quant
from qwen_chat.hub.client import RemoteFile


class NoSuchQuant(Exception):
    """The repo has no file set for this quant; the message lists what it has."""


def quant_files(quant: Quant, listing: list[RemoteFile], model_name: str, repo: str, commit: str) -> list[RemoteFile]:
    by_path = {f.path: f for f in listing}
    if all(f.path in by_path for f in quant.files):
        return [by_path[f.path] for f in quant.files]
    missing = ", ".join(f.path for f in quant.files if f.path not in by_path)
    if not quant.estimated:  # exact entries name exact files: a mismatch means the repo changed
        raise NoSuchQuant(f"{missing} not found in {repo} at commit {commit[:12]}: the catalog entry is out of date")
    sets = _sets(quant.name, listing)
    if not sets:
        found = sorted({m.group("quant") for f in listing if (m := _NAME.match(PurePosixPath(f.path).name))})
        raise NoSuchQuant(f"{repo} has no {quant.name} files at commit {commit[:12]} (its quants: "
                          f"{', '.join(found) or 'none'})")
    preferred = [files for stem, files in sets.items() if stem.lower() == model_name.lower()]
    if len(preferred) == 1 or len(sets) == 1:
        return preferred[0] if len(preferred) == 1 else next(iter(sets.values()))
    raise NoSuchQuant(f"{repo} has several {quant.name} file sets ({', '.join(sorted(sets))}); add the one you want "
                      "to your models_catalog.yaml with its exact paths")


_NAME = re.compile(r"(?P<stem>.+?)-(?P<quant>(?:[A-Z]+-)?[A-Za-z0-9_]+?)(?:-(?P<part>\d{5})-of-(?P<count>\d{5}))?"
                   r"\.gguf$")


def _sets(quant: str, listing: list[RemoteFile]) -> dict[str, list[RemoteFile]]:
    """Complete file sets of `quant` by stem (a split set only when every part is listed); mmproj files (the
    vision encoder) are never a model's weights."""
    parts: dict[str, list[tuple[int, int, RemoteFile]]] = defaultdict(list)
    for remote in listing:
        name = PurePosixPath(remote.path).name
        match = _NAME.match(name)
        if match is None or match.group("quant").upper() != quant.upper() or "mmproj" in name.lower():
            continue
        number, count = int(match.group("part") or 1), int(match.group("count") or 1)
        parts[match.group("stem")].append((number, count, remote))
    complete = {}
    for stem, found in parts.items():
        counts = {count for _, count, _ in found}
        numbers = sorted(number for number, _, _ in found)
        if len(counts) == 1 and numbers == list(range(1, counts.pop() + 1)):
            complete[stem] = [remote for _, _, remote in sorted(found, key=lambda item: item[0])]
    return complete
