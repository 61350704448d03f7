"""Generated token ids -> the text a client sees: complete UTF-8 characters only, cut at the first stop string,
and text that might be the start of a stop string held back until the next tokens decide it."""

from __future__ import annotations

from ..engine import Tokenizer


class TextStream:
    def __init__(self, tokenizer: Tokenizer, stops: tuple[str, ...] = (), skip_special: bool = True):
        self.decoder = tokenizer.stream(skip_special=skip_special)
        self.stops = stops
        self.pending = ""  # decoded, not yet emitted (a possible stop-string prefix)
        self.stopped = False
        self.stopped_by: str | None = None  # the stop string that ended the text

    def push(self, token: int) -> str:
        """Text to emit after this token ('' while undecided); sets `stopped` when a stop string appeared."""
        self.pending += self.decoder.push(token)
        cut = self._first_stop()
        if cut is not None:
            text, self.pending, self.stopped = self.pending[:cut], "", True
            return text
        keep = self._held_back()
        text, self.pending = self.pending[: len(self.pending) - keep], self.pending[len(self.pending) - keep:]
        return text

    def flush(self) -> str:
        """Whatever is left once generation ended without a stop string."""
        if self.stopped:
            return ""
        text, self.pending = self.pending + self.decoder.flush(), ""
        cut = self._first_stop(text)
        if cut is None:
            return text
        self.stopped = True  # the decoder's last bytes completed a stop string
        return text[:cut]

    def _first_stop(self, text: str | None = None) -> int | None:
        text = self.pending if text is None else text
        hits = [(i, s) for i, s in ((text.find(s), s) for s in self.stops) if i >= 0]
        if not hits:
            return None
        cut, self.stopped_by = min(hits)
        return cut

    def _held_back(self) -> int:
        """Length of the longest tail of `pending` that is a proper prefix of some stop string."""
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.pending)), best, -1):
                if self.pending.endswith(stop[:n]):
                    best = n
                    break
        return best
