"""The training text: eight public-domain novels from ../shared/corpus, cleaned and split into train / held-out.

Preprocessing (recorded in docs/default-model.md, applied identically on every rebuild):
- UTF-8, byte-order mark dropped, NFC normalised, CRLF -> LF;
- Project Gutenberg matter removed: everything from the "End of (the) Project Gutenberg ..." line on, and any
  paragraph that mentions Project Gutenberg, starts with "Produced by" or thanks the proofreaders;
- hard-wrapped lines joined into one line per paragraph (paragraphs stay separated by a blank line), runs of
  spaces collapsed, `_italics_` underscores dropped, curly quotes made straight;
- held-out: the last 5 % of each book's paragraphs (whole paragraphs, so no sentence is split across the sets)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

BOOKS = ("emma", "little_men", "little_women", "mansfield_park", "poirot_investigates", "pride_and_prejudice",
         "sense_and_sensibility", "the_man_in_the_brown_suit")
HELD_OUT_SHARE = 0.05
QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})
END_MARK = re.compile(r"^End of (the )?Project Gutenberg", re.IGNORECASE | re.MULTILINE)
FRONT_MATTER = re.compile(r"Project Gutenberg|^Produced by|proofreading", re.IGNORECASE)


@dataclass(frozen=True)
class Corpus:
    train: list[str]  # one string per book, paragraphs separated by "\n\n"
    held_out: list[str]
    sha256: dict[str, str]  # file name -> digest of the raw file, so a rebuild can check its input


def load_corpus(root: Path) -> Corpus:
    train, held_out, digests = [], [], {}
    for book in BOOKS:
        raw = (root / f"{book}.txt").read_bytes()
        digests[f"{book}.txt"] = hashlib.sha256(raw).hexdigest()
        paragraphs = clean(raw.decode("utf-8-sig"))
        cut = len(paragraphs) - max(1, round(HELD_OUT_SHARE * len(paragraphs)))
        train.append("\n\n".join(paragraphs[:cut]))
        held_out.append("\n\n".join(paragraphs[cut:]))
    return Corpus(train, held_out, digests)


def clean(text: str) -> list[str]:
    """A book's text -> its paragraphs, each on one line."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n"))
    if m := END_MARK.search(text):
        text = text[: m.start()]
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        para = " ".join(block.split()).replace("_", "").translate(QUOTES)
        if para and not FRONT_MATTER.search(para):
            paragraphs.append(para)
    return paragraphs
