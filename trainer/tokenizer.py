"""Tokenizers: the built-in byte-level one, or a Hugging Face tokenizer read from disk (a
`tokenizer.json`, or a local folder holding one: never a download)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional, Protocol

import numpy as np

from planner.errors import UserError

# Names an end-of-text token goes by in the common tokenizer families (GPT-2, Llama 3, Llama 2/Mistral, Gemma).
END_OF_TEXT_NAMES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|im_end|>")


class Tokenizer(Protocol):
    name: str
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens: vocabulary 256, no training, lossless on any text."""

    name = "byte"
    vocab_size = 256
    digest = "byte"   # nothing to hash: every byte tokenizer is the same

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """Token arrays of many texts (the fast path of `scaleplan prepare`)."""
        return [np.frombuffer(text.encode("utf-8"), dtype=np.uint8) for text in texts]

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

    def end_of_text(self) -> Optional[int]:
        return None   # bytes have no such token: documents are kept apart by a separator text


class HuggingFaceTokenizer:
    """Any `tokenizers` JSON file (GPT-2, Llama 3, ...), loaded offline from a file or a folder."""

    def __init__(self, path: str):
        from tokenizers import Tokenizer as HFTokenizer

        file = Path(path) / "tokenizer.json" if Path(path).is_dir() else Path(path)
        if not file.is_file():
            where = f"no tokenizer.json in the folder {path}" if Path(path).is_dir() else f"tokenizer file not found: {path}"
            raise UserError(f"{where}: give 'byte', a tokenizer.json or a local Hugging Face tokenizer folder")
        try:
            self._tok = HFTokenizer.from_file(str(file))
        except Exception as error:  # the library raises a bare Exception on a malformed file
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UserError(f"{file} is not a tokenizers JSON file: {first_line[:160]}") from None
        self.name = str(Path(path).resolve())
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self.digest = hashlib.sha256(file.read_bytes()).hexdigest()[:16]
        self._folder = file.parent

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(e.ids, dtype=np.int64) for e in self._tok.encode_batch(texts)]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)

    def end_of_text(self) -> Optional[int]:
        """The id of the end-of-text token: the folder's tokenizer_config.json `eos_token` when there
        is one, else the first special token with a well-known end-of-text name."""
        config = self._folder / "tokenizer_config.json"
        names = list(END_OF_TEXT_NAMES)
        try:
            eos = json.loads(config.read_text()).get("eos_token") if config.is_file() else None
            eos = eos.get("content") if isinstance(eos, dict) else eos
            if isinstance(eos, str):
                names.insert(0, eos)
        except (OSError, ValueError):
            pass   # an unreadable side file: fall back to the well-known names
        for name in names:
            token_id = self._tok.token_to_id(name)
            if token_id is not None:
                return token_id
        return None


def load_tokenizer(spec: str) -> Tokenizer:
    """'byte' for the built-in tokenizer, otherwise a path to a tokenizer.json or a folder with one."""
    return ByteTokenizer() if spec == "byte" else HuggingFaceTokenizer(spec)
