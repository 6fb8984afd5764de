"""Tests for the packaged evaluation datasets (fpsim.data)."""

from importlib import resources

import pytest

from fpsim import data


@pytest.fixture(scope="module")
def sents():
    return data.sentences()


@pytest.fixture(scope="module")
def pairs():
    return data.paraphrase_pairs()


def test_counts(sents, pairs):
    assert len(sents) >= 300
    assert len(pairs) >= 60
    assert len(data.public_domain_text().split()) >= 4000


def test_sentences_unique_nonempty_and_bounded(sents):
    assert len(set(sents)) == len(sents)
    assert len({s.casefold() for s in sents}) == len(sents)
    for s in sents:
        assert s and s == s.strip()
        assert "\n" not in s
        assert not s.startswith("#")
        assert 1 <= len(s.split()) <= 60, s


def test_sentence_length_variety(sents):
    lengths = [len(s.split()) for s in sents]
    assert sum(n <= 5 for n in lengths) >= 10
    assert sum(n >= 30 for n in lengths) >= 10
    assert any(any(ord(c) > 127 for c in s) for s in sents)


def test_pairs_are_consecutive_distinct_and_disjoint(sents, pairs):
    seen = set()
    for i, j in pairs:
        assert 0 <= i < len(sents) and j == i + 1 < len(sents)
        assert sents[i] != sents[j]
        assert i not in seen and j not in seen
        seen.update((i, j))
    assert pairs == sorted(pairs)


def test_no_marker_leaks(sents):
    assert all(data.PAIR_MARKER not in s for s in sents)
    assert data.PAIR_MARKER not in data.public_domain_text()


def test_returns_fresh_lists(sents):
    got = data.sentences()
    got.append("mutated")
    assert data.sentences() == sents


def test_files_are_utf8_package_resources():
    root = resources.files("fpsim.data")
    for name in ("sentences.txt", "public_domain.txt", "README.md"):
        raw = root.joinpath(name).read_bytes()
        raw.decode("utf-8")  # raises if not UTF-8 (ASCII is a subset)
        assert b"\r" not in raw
    root.joinpath("public_domain.txt").read_bytes().decode("ascii")


def test_text_sections_present():
    sections = data.text_sections()
    titles = " | ".join(sections)
    for key in ("Alice", "Pride and Prejudice", "Gettysburg", "Declaration", "Tom Sawyer"):
        assert key in titles, key
    for title, text in sections.items():
        assert len(text.split()) >= 200, title
        assert "===" not in text
    full = data.public_domain_text()
    assert "===" not in full
    assert full == "\n\n".join(sections.values())
    assert full.startswith("Alice was beginning to get very tired")
    assert "\n\n" in full and "\n\n\n" not in full
    for title, author, year in data.text_sources():
        assert title in sections and author and year < 1900


def test_pair_marker_parsing(monkeypatch):
    files = {
        "sentences.txt": "# s\nA one. <=>\nA uno.\nB.\n\n# t\nC. <=>\nC bis.\n",
    }
    monkeypatch.setattr(data, "_read", lambda name: files[name])
    data._parse_sentences.cache_clear()
    try:
        assert data.sentences() == ["A one.", "A uno.", "B.", "C.", "C bis."]
        assert data.paraphrase_pairs() == [(0, 1), (3, 4)]
        for bad in ("A. <=>\n# x\nB.\n", "A. <=>\nB. <=>\nC.\n", "A. <=>\n", "<=>\n"):
            files["sentences.txt"] = bad
            data._parse_sentences.cache_clear()
            with pytest.raises(ValueError):
                data.sentences()
    finally:
        data._parse_sentences.cache_clear()
