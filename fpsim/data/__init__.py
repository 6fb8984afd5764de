"""Small evaluation datasets shipped with fpsim (see ``README.md`` in this folder).

* :func:`sentences` / :func:`paraphrase_pairs` -- ~320 original English sentences
  in topic clusters, with ~80 marked paraphrase pairs, for embedding-similarity and
  nearest-neighbour-agreement checks (e.g. MiniLM).
* :func:`public_domain_text` / :func:`text_sections` -- several thousand words of
  public-domain prose for perplexity evaluation (e.g. SmolLM2).

File conventions
----------------
``sentences.txt``: one sentence per line, UTF-8. Lines starting with ``#`` are
comments (section headers) and blank lines are ignored. A sentence line that ends
with the marker ``<=>`` (:data:`PAIR_MARKER`) is paraphrased by the *next* sentence
line, which must follow immediately (no comment or blank line in between) and must
not itself carry the marker. The marker is stripped from the returned text.

``public_domain.txt``: sections introduced by a line
``=== <title>, <author> (<year>) ===`` (the author is the text after the last
comma); paragraphs are separated by blank lines.

The files are read with :mod:`importlib.resources`, so they work from an installed
package as long as they are listed in ``[tool.setuptools.package-data]``.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

__all__ = [
    "PAIR_MARKER",
    "paraphrase_pairs",
    "public_domain_text",
    "sentences",
    "text_sections",
    "text_sources",
]

PAIR_MARKER = "<=>"
SENTENCES_FILE = "sentences.txt"
TEXT_FILE = "public_domain.txt"

_HEADER_RE = re.compile(
    r"^===\s*(?P<title>.+),\s*(?P<author>[^,]+?)\s*\((?P<year>\d{3,4})\)\s*===$"
)


def _read(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def _parse_sentences() -> tuple[tuple[str, ...], tuple[tuple[int, int], ...]]:
    sents: list[str] = []
    pairs: list[tuple[int, int]] = []
    pending: int | None = None  # index of a marked sentence awaiting its partner
    pending_line = 0
    for lineno, raw in enumerate(_read(SENTENCES_FILE).splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            if pending is not None:
                raise ValueError(
                    f"{SENTENCES_FILE}:{pending_line}: pair marker not followed "
                    "immediately by its paraphrase"
                )
            continue
        marked = line.endswith(PAIR_MARKER)
        if marked:
            line = line[: -len(PAIR_MARKER)].rstrip()
        if not line or PAIR_MARKER in line:
            raise ValueError(f"{SENTENCES_FILE}:{lineno}: misplaced pair marker")
        idx = len(sents)
        sents.append(line)
        if pending is not None:
            if marked:
                raise ValueError(
                    f"{SENTENCES_FILE}:{lineno}: second sentence of a pair must not be marked"
                )
            pairs.append((pending, idx))
            pending = None
        elif marked:
            pending, pending_line = idx, lineno
    if pending is not None:
        raise ValueError(f"{SENTENCES_FILE}:{pending_line}: pair marker at end of file")
    return tuple(sents), tuple(pairs)


def sentences() -> list[str]:
    """All sentences (comments, blank lines and pair markers removed), in file order.

    Examples
    --------
    >>> s = sentences()
    >>> len(s), s[0]
    (320, 'I forgot my umbrella, so I got soaked on the way to work.')
    """
    return list(_parse_sentences()[0])


def paraphrase_pairs() -> list[tuple[int, int]]:
    """Index pairs ``(i, i + 1)`` into :func:`sentences` of sentences with the same meaning.

    Examples
    --------
    >>> pairs = paraphrase_pairs()
    >>> len(pairs), pairs[:2]
    (80, [(0, 1), (2, 3)])
    """
    return list(_parse_sentences()[1])


@functools.lru_cache(maxsize=None)
def _parse_text() -> tuple[tuple[str, str, int, str], ...]:
    sections: list[tuple[str, str, int, str]] = []
    current: tuple[str, str, int] | None = None
    paragraphs: list[str] = []
    para: list[str] = []

    def flush_para() -> None:
        if para:
            paragraphs.append(" ".join(para))
            para.clear()

    def flush_section() -> None:
        flush_para()
        if current is not None:
            if not paragraphs:
                raise ValueError(f"{TEXT_FILE}: section {current[0]!r} is empty")
            sections.append((*current, "\n\n".join(paragraphs)))
            paragraphs.clear()

    for lineno, raw in enumerate(_read(TEXT_FILE).splitlines(), start=1):
        line = raw.strip()
        if line.startswith("==="):
            m = _HEADER_RE.match(line)
            if m is None:
                raise ValueError(f"{TEXT_FILE}:{lineno}: malformed section header {line!r}")
            flush_section()
            current = (m["title"].strip(), m["author"].strip(), int(m["year"]))
        elif not line:
            flush_para()
        elif current is None:
            raise ValueError(f"{TEXT_FILE}:{lineno}: text before the first section header")
        else:
            para.append(line)
    flush_section()
    titles = [s[0] for s in sections]
    if len(set(titles)) != len(titles):
        raise ValueError(f"{TEXT_FILE}: duplicate section titles")
    return tuple(sections)


def text_sections() -> dict[str, str]:
    """``{title: text}`` for each public-domain work, in file order (paragraphs joined by blank lines).

    Examples
    --------
    >>> sections = text_sections()
    >>> len(sections), next(iter(sections))
    (5, "Alice's Adventures in Wonderland - Chapter I: Down the Rabbit-Hole")
    """
    return {title: text for title, _, _, text in _parse_text()}


def text_sources() -> list[tuple[str, str, int]]:
    """``(title, author, year)`` for each section of :func:`public_domain_text`.

    Examples
    --------
    >>> text_sources()[1]
    ('Pride and Prejudice - Chapter I', 'Jane Austen', 1813)
    """
    return [(title, author, year) for title, author, year, _ in _parse_text()]


def public_domain_text() -> str:
    """All public-domain prose without the ``===`` header lines, paragraphs joined by blank lines.

    Examples
    --------
    >>> public_domain_text()[:42]
    'Alice was beginning to get very tired of s'
    """
    return "\n\n".join(text for *_, text in _parse_text())
