"""Where streamed Markdown is cut into segments: nothing lost, the same at any chunking, cuts only where the
rendering stays the same, and every segment small."""

from __future__ import annotations

import random

import pytest

from qwen_chat.tui.segments import SEGMENT_CHARS, SEGMENT_LINES, Append, Cut, Segmenter, split_segments

from markdown_samples import CODE, LIST, NESTED, PROSE, TABLE, TILDES

TEXTS = {"list": LIST, "code": CODE, "table": TABLE, "prose": PROSE, "nested": NESTED, "tildes": TILDES}


def ops_for(text: str, chunks: list[int]) -> list:
    segmenter, ops, at = Segmenter(), [], 0
    for size in chunks:
        ops += segmenter.feed(text[at:at + size])
        at += size
    ops += segmenter.feed(text[at:]) + segmenter.finish()
    return ops


def random_chunks(text: str, seed: int) -> list[int]:
    rng = random.Random(seed)
    sizes, total = [], 0
    while total < len(text):
        sizes.append(rng.randint(1, 9))
        total += sizes[-1]
    return sizes


@pytest.mark.parametrize("name", TEXTS)
def test_the_appended_text_is_the_text_whatever_the_chunks(name: str) -> None:
    text = TEXTS[name]
    whole = ops_for(text, [])
    for seed in range(5):
        ops = ops_for(text, random_chunks(text, seed))
        assert "".join(op.text for op in ops if isinstance(op, Append)) == text
        assert [op for op in ops if isinstance(op, Cut)] == [op for op in whole if isinstance(op, Cut)]


@pytest.mark.parametrize("name", TEXTS)
def test_every_segment_is_small(name: str) -> None:
    for segment in split_segments(TEXTS[name]):
        lines = segment.splitlines()
        assert len(lines) <= SEGMENT_LINES + 4 or len(segment) <= SEGMENT_CHARS + 200, segment[:200]


def test_a_long_list_is_cut_between_items_and_each_part_keeps_its_numbers() -> None:
    segments = split_segments(LIST)
    assert len(segments) > 5
    for segment in segments[1:-1]:
        first = segment.splitlines()[0]
        assert first.split(".")[0].isdigit()  # starts at an item: Markdown numbers the list from it
    numbers = [int(line.split(".")[0]) for s in segments for line in s.splitlines() if line[:1].isdigit()]
    assert numbers == list(range(1, 201))


def test_a_code_block_is_cut_between_lines_and_both_parts_are_code() -> None:
    cuts = [op for op in ops_for(CODE, []) if isinstance(op, Cut)]
    assert cuts and all(c.kind == "fence" and c.close == "```" and c.reopen == "```python\n" for c in cuts)
    segments = split_segments(CODE)
    for segment in segments[1:]:
        assert segment.startswith("```python\n")
    for segment in segments[:-1]:
        assert segment.endswith("\n```")
        assert segment.count("```") % 2 == 0  # every part opens and closes its fence
    code = "".join(s.removeprefix("```python\n").removesuffix("```") for s in segments)
    assert code == CODE  # the parts, without the fences a cut adds, are the text itself


def test_a_fence_is_never_left_alone_and_a_longer_fence_is_not_closed_by_a_shorter_one() -> None:
    for segment in split_segments(TILDES):
        body = segment.splitlines()
        assert body and not (len(body) == 1 and body[0].startswith("~"))
    cuts = [op for op in ops_for(TILDES, []) if isinstance(op, Cut)]
    assert cuts and all(c.kind == "fence" and c.reopen == "~~~~\n" for c in cuts)


def test_a_table_is_cut_between_rows_with_its_header_repeated_and_fixed_widths() -> None:
    cuts = [op for op in ops_for(TABLE, []) if isinstance(op, Cut)]
    table_cuts = [c for c in cuts if c.kind == "table"]
    assert len(table_cuts) > 3
    assert all(c.reopen == "| # | country | capital |\n|---|:---|---:|\n" for c in table_cuts)
    assert len({c.widths for c in table_cuts}) == 1  # every part is drawn with the same widths
    assert table_cuts[0].widths == (2, 10, 16)  # the widest cells of the first part ("Capital xxxxxxxx")


def test_prose_is_cut_only_after_blank_lines() -> None:
    segments = split_segments(PROSE)
    assert len(segments) > 5
    for segment in segments[:-1]:
        assert segment.endswith("\n\n")


def test_indented_lines_stay_with_what_they_continue() -> None:
    for segment in split_segments(NESTED)[1:]:
        assert segment.startswith("- item ")


def test_nothing_is_cut_before_the_segment_is_long_enough() -> None:
    short = "".join(f"{i}. x\n" for i in range(1, SEGMENT_LINES - 2))
    assert split_segments(short) == [short]
