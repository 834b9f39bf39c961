"""Incremental detokenization: the text each new token adds, in O(window) per token.

Decoding the whole sequence every step costs O(n) per token; instead decode a short window and
diff it against the previous one. A byte-level tokenizer can split one character over several
tokens; while the window ends in the replacement character, nothing is emitted yet, for at most
the 4 tokens a UTF-8 character can span: bytes that never complete one are emitted as U+FFFD
rather than widening the window (and the cost per token) forever.
"""

from __future__ import annotations

from typing import Any

_INCOMPLETE = "\ufffd"
_MAX_HELD_TOKENS = 4


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix_offset = 0  # start of the window decoded for context
        self._read_offset = 0  # end of the text already emitted

    def add(self, token_id: int) -> str:
        """The new text `token_id` completes (may be empty)."""
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        held = len(self._ids) - self._read_offset
        if len(full) > len(prefix) and (not full.endswith(_INCOMPLETE) or held >= _MAX_HELD_TOKENS):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return full[len(prefix) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (a dangling partial character decodes as U+FFFD)."""
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return full[len(prefix) :]

    def _decode(self, ids: list[int]) -> str:
        text: str = self._tokenizer.decode(ids, skip_special_tokens=True)
        return text
