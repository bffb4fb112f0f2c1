import json

import numpy as np
import pytest

from launch.cli import main as cli
from planner.errors import UserError
from trainer.data import TokenData, WindowSampler, eval_windows, prepare, token_dtype
from trainer.tokenizer import ByteTokenizer, HuggingFaceTokenizer


def test_prepare_writes_splits_and_header(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("def f():\n    return 1\n" * 50)
    b.write_text("x = [i for i in range(3)]\n" * 10)
    meta = prepare([a, b], ByteTokenizer(), tmp_path / "out", val_fraction=0.2)
    data = TokenData.open(tmp_path / "out")
    assert meta["vocab_size"] == 256 and data.train.dtype == np.uint16
    assert data.train.size + data.val.size == meta["tokens"]["train"] + meta["tokens"]["val"]
    text = bytes(np.concatenate([data.train, data.val]).astype(np.uint8)).decode()
    assert text == a.read_text() + "\n\n" + b.read_text() + "\n\n"
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["tokenizer"] == "byte"


def test_wide_vocabularies_use_uint32():
    assert token_dtype(50304) == np.uint16 and token_dtype(128256) == np.uint32


def test_windows_are_sharded_without_overlap_and_match_one_process():
    tokens = np.arange(10_000, dtype=np.uint16)
    whole = WindowSampler(tokens, 16, 8, 0, 1, seed=5)
    halves = [WindowSampler(tokens, 16, 8, r, 2, seed=5) for r in range(2)]
    for _ in range(3):
        one = np.concatenate([x.numpy() for x, _ in whole.micro_batches(4)])
        parts = [np.concatenate([x.numpy() for x, _ in h.micro_batches(2)]) for h in halves]
        assert not {tuple(r) for r in parts[0]} & {tuple(r) for r in parts[1]}
        np.testing.assert_array_equal(one, np.concatenate(parts))


def test_targets_are_inputs_shifted_by_one():
    tokens = np.arange(1000, dtype=np.uint16)
    x, y = next(WindowSampler(tokens, 8, 2, 0, 1, seed=0).micro_batches(2))
    np.testing.assert_array_equal(x[:, 1:].numpy(), y[:, :-1].numpy())


def test_sampler_state_restores_position_exactly():
    tokens = np.arange(5000, dtype=np.uint16)
    a = WindowSampler(tokens, 8, 4, 0, 1, seed=1)
    for _ in range(3):
        list(a.micro_batches(4))
    b = WindowSampler(tokens, 8, 4, 0, 1, seed=99)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(next(a.micro_batches(4))[0].numpy(), next(b.micro_batches(4))[0].numpy())


def test_eval_windows_are_fixed():
    tokens = np.arange(3000, dtype=np.uint16)
    np.testing.assert_array_equal(eval_windows(tokens, 8, 4, 0).numpy(), eval_windows(tokens, 8, 4, 0).numpy())


def test_missing_data_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="scaleplan prepare"):
        TokenData.open(tmp_path / "nothing")


def test_huggingface_tokenizer_file_offline(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["def add(a, b):\n    return a + b\n"] * 20,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]"]))
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    loaded = HuggingFaceTokenizer(str(path))
    assert loaded.vocab_size == tok.get_vocab_size()
    assert loaded.decode(loaded.encode("return a + b")).strip() == "return a + b"
    src = tmp_path / "src.py"
    src.write_text("def add(a, b):\n    return a + b\n" * 30)
    assert cli(["prepare", str(src), "--tokenizer", str(path), "--out", str(tmp_path / "d")]) == 0
    assert TokenData.open(tmp_path / "d").meta["vocab_size"] == loaded.vocab_size


def test_prepare_cli_rejects_bad_tokenizer_file(tmp_path, capsys):
    bad = tmp_path / "tok.json"
    bad.write_text("{not json")
    with pytest.raises(SystemExit) as exit_info:
        cli(["prepare", str(bad), "--tokenizer", str(bad), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_prepare_into_a_file_path_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        cli(["prepare", str(blocker), "--out", str(blocker / "sub")])
    assert exit_info.value.code == 2 and "Not a directory" in capsys.readouterr().err
