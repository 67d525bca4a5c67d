"""Prompt embeddings learned from the prompt grammar's own tokens; nothing is downloaded.

A prompt such as ``balls: red agent ball, radius 0.15 m, ...`` becomes a sequence of word tokens,
where every number is the token ``<num>`` carrying its value. A small transformer reads the sequence
so each number binds to the attribute and subject before it, and a mean over tokens gives one
vector that conditions the generator. The vocabulary is built from the training captions and
saved with the checkpoint; an unknown word maps to ``<unk>`` rather than failing, because the
grammar, not the tokenizer, is the place that rejects bad prompts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

_TOKEN = re.compile(r"[-+]?\d+(?:\.\d+)?|[a-z/]+")
SPECIAL = ("<pad>", "<unk>", "<num>")
PAD, UNK, NUM = 0, 1, 2


class PromptTokenizer:
    """Words to ids, numbers to ``(<num>, value)``; padded to ``max_tokens``."""

    def __init__(self, vocab: Sequence[str], max_tokens: int = 128) -> None:
        if list(vocab[: len(SPECIAL)]) != list(SPECIAL):
            raise ValueError(f"vocabulary must start with {SPECIAL}")
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.max_tokens = max_tokens

    @classmethod
    def from_captions(cls, captions: Iterable[str], max_tokens: int = 128) -> PromptTokenizer:
        words = sorted({w for c in captions for w in _words(c) if not _is_number(w)})
        return cls([*SPECIAL, *words], max_tokens)

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``ids int64[B, L]`` and ``values float32[B, L]`` (the number of each ``<num>`` token, else 0)."""
        ids = torch.zeros(len(texts), self.max_tokens, dtype=torch.long)
        values = torch.zeros(len(texts), self.max_tokens)
        for b, text in enumerate(texts):
            words = _words(text)
            if len(words) > self.max_tokens:
                raise ValueError(f"prompt has {len(words)} tokens; the model reads at most {self.max_tokens}")
            for i, w in enumerate(words):
                if _is_number(w):
                    ids[b, i], values[b, i] = NUM, float(w)
                else:
                    ids[b, i] = self.index.get(w, UNK)
        return ids, values


def _words(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _is_number(word: str) -> bool:
    return word[0].isdigit() or word[0] in "+-"


@dataclass
class PromptEncoderConfig:
    """Size of the prompt encoder."""

    vocab_size: int = 64
    max_tokens: int = 128
    dim: int = 64  # token width
    layers: int = 2
    heads: int = 4
    out_dim: int = 128  # width of the conditioning vector


class PromptEncoder(nn.Module):
    """Token ids and number values to one conditioning vector per prompt."""

    def __init__(self, cfg: PromptEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim, padding_idx=PAD)
        self.position = nn.Parameter(torch.zeros(cfg.max_tokens, cfg.dim))
        # Numbers enter through a few smooth features, so 0.15 and 0.16 embed close together.
        self.number = nn.Sequential(nn.Linear(4, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        layer = nn.TransformerEncoderLayer(
            cfg.dim, cfg.heads, dim_feedforward=2 * cfg.dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(cfg.dim), nn.Linear(cfg.dim, cfg.out_dim))

    def forward(self, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        is_num = (ids == NUM).unsqueeze(-1).float()
        v = values.unsqueeze(-1)
        feats = torch.cat([v, v.abs().sqrt() * v.sign(), torch.sin(3 * v), torch.cos(3 * v)], dim=-1)
        x = self.embed(ids) + is_num * self.number(feats) + self.position[: ids.shape[1]]
        pad = ids == PAD
        x = self.encoder(x, src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).float()
        pooled = (x * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        return self.out(pooled)
