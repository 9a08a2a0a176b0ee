"""Tiny CLIP building blocks, built offline.

Used by the example suite (``hfdistac example-suite``) and by the test-suite fixtures: a word-level CLIP
tokenizer made from a word list (no download), a small :class:`~transformers.CLIPConfig` and a
:class:`~transformers.CLIPImageProcessor` for small images. Nothing here touches the network.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
_PUNCT = list(".,:;\"'!?-()")


def build_word_tokenizer(words: Iterable[str], model_max_length: int = 32):
    """Build a CLIP BPE tokenizer in which every given word (split on non-alphanumerics) is exactly one token.

    Merges are added by simulating BPE: a word first takes every merge already known (lowest rank first, as
    the tokenizer will apply them), and a new merge is appended only when none applies. Appending each
    word's left-to-right merges naively lets an earlier word's merge (``r e`` from "red") fire inside a later
    word ("three") and split it. Every lower-case character and common punctuation is in the vocabulary too,
    so unknown words still tokenize (character by character).

    Args:
        words: Words or phrases whose words must each become a single token.
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
    for w in dict.fromkeys(tokens):  # ordered, unique
        pieces = list(w[:-1]) + [w[-1] + "</w>"]
        while len(pieces) > 1:
            known = [(rank[(a, b)], i) for i, (a, b) in enumerate(zip(pieces, pieces[1:], strict=False))
                     if (a, b) in rank]
            if known:
                _, i = min(known)
            else:
                i = 0
                rank[(pieces[0], pieces[1])] = len(merges)
                merges.append((pieces[0], pieces[1]))
            merged = pieces[i] + pieces[i + 1]
            vocab.setdefault(merged, len(vocab))
            pieces = pieces[:i] + [merged] + pieces[i + 2:]
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def tiny_clip_config(
    tokenizer,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    image_size: int = 32,
    patch_size: int = 8,
    projection_dim: int = 32,
    max_text_length: int = 32,
):
    """A small ``CLIPConfig`` consistent with ``tokenizer`` (vocabulary size, BOS/EOS/pad ids).

    Args:
        tokenizer: The tokenizer from :func:`build_word_tokenizer`.
        hidden_size: Width of both towers.
        num_layers: Transformer blocks per tower.
        num_heads: Attention heads.
        image_size: Input resolution in pixels.
        patch_size: ViT patch size.
        projection_dim: Joint embedding width.
        max_text_length: Maximum number of text tokens.
    """
    from transformers import CLIPConfig

    vocab = tokenizer.get_vocab()
    ids = {"bos_token_id": vocab[BOS], "eos_token_id": vocab[EOS], "pad_token_id": vocab[EOS]}
    common = dict(
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        projection_dim=projection_dim,
    )
    text = dict(common, vocab_size=len(vocab), max_position_embeddings=max_text_length, **ids)
    vision = dict(common, image_size=image_size, patch_size=patch_size, num_channels=3)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)


def tiny_image_processor(image_size: int = 32):
    """A ``CLIPImageProcessor`` (resize shortest side, centre crop, CLIP normalisation) for ``image_size``."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_resize=True,
        do_center_crop=True,
        do_normalize=True,
        do_convert_rgb=True,
    )
