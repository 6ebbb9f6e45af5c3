"""A bracketed paste stays text: nothing between ESC[200~ and ESC[201~ can become a key press (issue 25).

Textual 8.2.8's parser (textual/_xterm_parser.py, XTermParser.parse) leaves paste mode only on ESC[201~, but
an ESC inside the paste still starts its escape-sequence search: the characters after it are taken out of the
paste, and when the search gives up (another ESC, 32 characters, or the escape delay) they are all reissued
as key presses. A paste holding `ESC ] 0 ; t BEL` followed by a Ctrl+Q byte quit the app; BEL alone is Ctrl+G.

PasteGuardParser sits between the driver's feed() and Textual's own parse loop: outside a paste every
character goes through untouched; inside one, each control character is shown as its Unicode picture, so
the only ESC Textual sees before the paste ends is the one that starts ESC[201~. Textual then buffers the
whole paste as text and posts one Paste event, as it does for a harmless paste.
"""

from __future__ import annotations

import sys
from collections.abc import Generator

from textual._parser import ParseEOF, ParseTimeout, Peek1, Read1, TokenCallback
from textual._xterm_parser import BRACKETED_PASTE_END, BRACKETED_PASTE_START, XTermParser
from textual.message import Message

from qwen_chat.tui.printable import printable

ESC = "\x1b"


def made_safe(text: str) -> str:
    """Pasted `text` with its control characters shown as symbols. A terminal sends each pasted newline as
    CR, which must stay a line break; NUL goes, as Textual itself drops it from every paste."""
    return "\r".join(printable(part) for part in text.replace("\x00", "").split("\r"))


class PasteFilter:
    """The paste state, one character at a time: what to hand Textual's parser for each character read."""

    def __init__(self) -> None:
        self.in_paste = False
        self._seen = ""  # outside a paste: how much of ESC[200~ the last characters spell
        self._held = ""  # inside a paste: the start of what may be ESC[201~, held until it is or is not

    def timed_out(self) -> None:
        # Textual gives up an unfinished escape sequence after the escape delay: ESC, a pause, then [200~ is
        # the Escape key and typed text to it, so it must not start a paste here either
        self._seen = ""

    def feed(self, character: str) -> str:
        if self.in_paste:
            return self._inside(character)
        # outside a paste everything goes straight on (a held ESC would delay the Escape key); ESC occurs in
        # the start marker only at its head, so a mismatch can only restart at an ESC
        if character == ESC:
            self._seen = ESC
        elif self._seen:
            self._seen += character
        if not BRACKETED_PASTE_START.startswith(self._seen):
            self._seen = ""
        elif self._seen == BRACKETED_PASTE_START:
            self.in_paste, self._seen = True, ""
        return character

    def _inside(self, character: str) -> str:
        if character == ESC:  # a new candidate end marker: whatever was held is paste text after all
            released, self._held = made_safe(self._held), ESC
            return released
        if not self._held:
            return made_safe(character)
        self._held += character
        if self._held == BRACKETED_PASTE_END:
            self.in_paste, self._held = False, ""
            return BRACKETED_PASTE_END  # whole, in one go: Textual reads it with no pause to time out on
        if BRACKETED_PASTE_END.startswith(self._held):
            return ""
        released, self._held = made_safe(self._held), ""
        return released


class PasteGuardParser(XTermParser):
    """Textual's parser with every character passed through a PasteFilter on its way in."""

    def parse(self, token_callback: TokenCallback[Message]) -> Generator[Read1 | Peek1, str, None]:
        textual = super().parse(token_callback)
        paste = PasteFilter()
        try:
            request = next(textual)
            while True:
                try:
                    # Textual's own request, timeout included, so its escape delay works as before
                    character = yield self.read1(request.timeout)
                except ParseTimeout:
                    paste.timed_out()
                    request = textual.throw(ParseTimeout())
                    continue
                except ParseEOF:
                    textual.throw(ParseEOF())
                    return
                for piece in paste.feed(character):
                    request = textual.send(piece)
        except StopIteration:  # Textual's loop ended (end of input)
            return


def install() -> None:
    """Textual's terminal drivers build their parser by the name XTermParser in their own modules (in
    run_input_thread, with no hook to choose another): that name is pointed at the guard. Idempotent."""
    if sys.platform == "win32":
        from textual.drivers import win32 as windows_driver

        windows_driver.XTermParser = PasteGuardParser  # type: ignore[misc]
        return
    from textual.drivers import linux_driver, linux_inline_driver

    linux_driver.XTermParser = PasteGuardParser  # type: ignore[misc]
    linux_inline_driver.XTermParser = PasteGuardParser  # type: ignore[misc]
