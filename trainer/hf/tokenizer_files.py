"""The tokenizer a run's data was prepared with, copied beside its exported weights (Hugging Face
tokenizers only: the byte tokenizer has no `transformers` twin and needs none)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

# What a `transformers` tokenizer folder may hold; tokenizer.json alone is enough for the fast tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")
END_OF_TEXT_NAMES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>")
BEGIN_OF_TEXT_NAMES = ("<|begin_of_text|>", "<s>", "<bos>")


def data_tokenizer(config_tree: dict) -> Optional[Path]:
    """The tokenizer file or folder the run's data header names (data.dir or each of data.sources),
    or None for the byte tokenizer or data that is no longer there."""
    data = config_tree.get("data") or {}
    dirs = [data.get("dir")] + [source.get("dir") for source in data.get("sources") or [] if isinstance(source, dict)]
    for directory in filter(None, dirs):
        for header in ("index.json", "meta.json"):
            try:
                named = json.loads((Path(directory) / header).read_text()).get("tokenizer")
            except (OSError, ValueError, AttributeError):
                continue
            named = named.get("name") or named.get("path") if isinstance(named, dict) else named
            if isinstance(named, str) and named != "byte" and Path(named).exists():
                return Path(named)
    return None


def copy_tokenizer(source: Path, out: Path) -> tuple[Optional[int], Optional[int]]:
    """Copy the tokenizer's files into `out`; (bos, eos) token ids, None where it has none."""
    from tokenizers import Tokenizer

    folder = source if source.is_dir() else None
    if folder is None:
        shutil.copyfile(source, out / "tokenizer.json")
    else:
        for name in TOKENIZER_FILES:
            if (folder / name).is_file():
                shutil.copyfile(folder / name, out / name)
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    bos = _token_id(tokenizer, config.get("bos_token"), BEGIN_OF_TEXT_NAMES)
    eos = _token_id(tokenizer, config.get("eos_token"), END_OF_TEXT_NAMES)
    if not config_path.is_file():   # AutoTokenizer wants to know the class; the fast one reads tokenizer.json
        config = {"tokenizer_class": "PreTrainedTokenizerFast"}
        config.update({key: tokenizer.id_to_token(value) for key, value in (("bos_token", bos), ("eos_token", eos))
                       if value is not None})
        config_path.write_text(json.dumps(config, indent=2) + "\n")
    return bos, eos


def _token_id(tokenizer, configured, names: tuple[str, ...]) -> Optional[int]:
    configured = configured.get("content") if isinstance(configured, dict) else configured
    for name in ([configured] if isinstance(configured, str) else []) + list(names):
        token_id = tokenizer.token_to_id(name)
        if token_id is not None:
            return token_id
    return None
