"""Sensitive-word filter: Aho-Corasick over case-folded text, matches replaced by ``*``.

Every occurrence of every word is masked, overlapping ones included, one ``*`` per
character, so the text keeps its length. With ``skip_separators`` the automaton runs over
the text with whitespace and punctuation removed and a match is mapped back to the
original span (``b.a.d`` is masked as ``*****``).
"""

from __future__ import annotations

import unicodedata
from collections import deque
from collections.abc import Iterable

__all__ = ["WordFilter"]


def _fold(ch: str) -> str:
    low = ch.lower()
    return low if len(low) == 1 else ch


def _is_separator(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return cat[0] in ("Z", "P", "C") or ch.isspace() or cat == "Sk"


class WordFilter:
    """Immutable after construction; safe to share between rooms."""

    def __init__(self, words: Iterable[str], *, skip_separators: bool = True) -> None:
        self.skip_separators = skip_separators
        self._goto: list[dict[str, int]] = [{}]
        self._fail: list[int] = [0]
        self._out: list[int] = [0]  # longest word length ending at this state (0 = none)
        count = 0
        for word in words:
            folded = "".join(_fold(c) for c in word if not (skip_separators and _is_separator(c)))
            if not folded:
                continue
            count += 1
            state = 0
            for ch in folded:
                nxt = self._goto[state].get(ch)
                if nxt is None:
                    nxt = len(self._goto)
                    self._goto[state][ch] = nxt
                    self._goto.append({})
                    self._fail.append(0)
                    self._out.append(0)
                state = nxt
            self._out[state] = max(self._out[state], len(folded))
        self.word_count = count
        queue: deque[int] = deque(self._goto[0].values())
        while queue:
            state = queue.popleft()
            for ch, nxt in self._goto[state].items():
                queue.append(nxt)
                f = self._fail[state]
                while f and ch not in self._goto[f]:
                    f = self._fail[f]
                cand = self._goto[f].get(ch, 0)
                self._fail[nxt] = cand if cand != nxt else 0
                self._out[nxt] = max(self._out[nxt], self._out[self._fail[nxt]])

    def __bool__(self) -> bool:
        return self.word_count > 0

    def spans(self, text: str) -> list[tuple[int, int]]:
        """``(start, end)`` index ranges of ``text`` to mask (may overlap)."""
        if not self.word_count:
            return []
        if self.skip_separators:
            index = [i for i, c in enumerate(text) if not _is_separator(c)]
        else:
            index = list(range(len(text)))
        goto, fail, out = self._goto, self._fail, self._out
        spans: list[tuple[int, int]] = []
        state = 0
        for pos, i in enumerate(index):
            ch = _fold(text[i])
            while state and ch not in goto[state]:
                state = fail[state]
            state = goto[state].get(ch, 0)
            length = out[state]
            if length:
                spans.append((index[pos - length + 1], i + 1))
        return spans

    def clean(self, text: str) -> tuple[str, bool]:
        """The masked text and whether anything was masked."""
        spans = self.spans(text)
        if not spans:
            return text, False
        chars = list(text)
        for start, end in spans:
            for i in range(start, end):
                chars[i] = "*"
        return "".join(chars), True
