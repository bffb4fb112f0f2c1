"""Tokenizers: the built-in byte-level one, or a Hugging Face `tokenizer.json` read from disk."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

from planner.errors import UserError


class Tokenizer(Protocol):
    name: str
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens: vocabulary 256, no training, lossless on any text."""

    name = "byte"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


class HuggingFaceTokenizer:
    """Any `tokenizers` JSON file (GPT-2, Llama 3, ...), loaded offline from a path."""

    def __init__(self, path: str):
        from tokenizers import Tokenizer as HFTokenizer

        if not Path(path).is_file():
            raise UserError(f"tokenizer file not found: {path}")
        try:
            self._tok = HFTokenizer.from_file(path)
        except Exception as error:  # the library raises a bare Exception on a malformed file
            raise UserError(f"{path} is not a tokenizers JSON file: {error}") from None
        self.name = str(Path(path).resolve())
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)


def load_tokenizer(spec: str) -> Tokenizer:
    """'byte' for the built-in tokenizer, otherwise a path to a tokenizer.json."""
    return ByteTokenizer() if spec == "byte" else HuggingFaceTokenizer(spec)
