"""A word-level CLIP tokenizer whose merges really spell every vocabulary word as one token.

:func:`hfdistac.tiny.build_word_tokenizer` appends each word's left-to-right merges in word order; BPE applies
merges by rank, so an earlier word's merge (``r e`` from "red") can fire inside a later word ("three") and
leave it split into pieces. Here merges are added by simulating BPE: a word first takes every merge already
known (lowest rank first, as the tokenizer will), and a new merge is appended only when none applies, so
every word ends as a single token and earlier words are unaffected. Same vocabulary layout otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..tiny import _PUNCT, BOS, EOS


def build_consistent_word_tokenizer(words: Iterable[str], model_max_length: int = 32):
    """Build a ``CLIPTokenizer`` in which every word (split on non-alphanumerics) is exactly one token.

    Args:
        words: Words or phrases whose words must each be a single token.
        model_max_length: The tokenizer's maximum length.

    Returns:
        A ``transformers.CLIPTokenizer``.
    """
    from transformers import CLIPTokenizer

    tokens: list[str] = []
    for w in words:
        tokens.extend(t for t in re.findall(r"[a-z0-9]+", w.lower()) if t)
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789" + "".join(tokens)) | set(_PUNCT))
    vocab: dict[str, int] = {}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    for c in chars:
        vocab.setdefault(c + "</w>", len(vocab))
    merges: list[tuple[str, str]] = []
    rank: dict[tuple[str, str], int] = {}
    for w in dict.fromkeys(tokens):
        pieces = list(w[:-1]) + [w[-1] + "</w>"]
        while len(pieces) > 1:
            pairs = [(rank.get((a, b)), i) for i, (a, b) in enumerate(zip(pieces, pieces[1:], strict=False))]
            known = [(r, i) for r, i in pairs if r is not None]
            if known:
                _, i = min(known)
            else:
                i = 0
                pair = (pieces[0], pieces[1])
                rank[pair] = len(merges)
                merges.append(pair)
            merged = pieces[i] + pieces[i + 1]
            vocab.setdefault(merged, len(vocab))
            pieces = pieces[:i] + [merged] + pieces[i + 2:]
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
