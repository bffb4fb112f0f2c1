"""Hugging Face in and out (trainer/hf/): a random `transformers` model built locally (no download)
-> `model.init_from=hf:DIR` gives its logits -> 3 steps under FSDP on 2 ranks and under TP 2 ->
`scaleplan export` -> `from_pretrained` loads every weight and gives our logits."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers", reason="transformers is not installed (pip install -e .[hf])")
pytest.importorskip("safetensors", reason="safetensors is not installed")
os.environ["HF_HUB_OFFLINE"] = "1"   # nothing here may reach the network

from launch.cli import main as scaleplan  # noqa: E402
from tests.helpers import DEEPSPEED_MISSING, TINY, run_train, write_tiny_corpus  # noqa: E402
from trainer.config import ModelConfig, load_config  # noqa: E402
from trainer.hf.config_json import export_refusal, hf_config  # noqa: E402
from trainer.hf.export import write_folder  # noqa: E402
from trainer.hf.initial_weights import load_initial_weights  # noqa: E402
from trainer.hf.run_checkpoint import find_checkpoint, read_model_state  # noqa: E402
from trainer.hf.weights import to_hf  # noqa: E402
from trainer.model import Transformer  # noqa: E402

TOLERANCE = 1e-5
SHAPE = dict(n_layers=2, d_model=32, n_heads=4, vocab_size=256, seq_len=32, norm_eps=1e-5)
# (our model section, the layouts its 3 steps run under)
ROUNDTRIP = {
    "llama": dict(arch="llama", ffn_hidden=64),
    "llama_gqa": dict(arch="llama", ffn_hidden=64, n_kv_heads=2),
    "gpt": dict(arch="gpt", ffn_hidden=128, bias=True),     # GPT-2 always has biases
    "tied": dict(arch="llama", ffn_hidden=64, n_kv_heads=2, tie_embeddings=True, bias=True),
}
LAYOUTS = {"fsdp": ["parallel.backend=fsdp", "parallel.zero_stage=3"], "tp": ["parallel.backend=ddp", "parallel.tp=2"]}


def hf_model(model: ModelConfig):
    """A random transformers model of `model`'s shape: every tensor (norms and biases too) random,
    so that a misplaced one shows."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if model.arch == "llama":
        config = LlamaConfig(vocab_size=model.vocab_size, hidden_size=model.d_model, intermediate_size=model.ffn,
                             num_hidden_layers=model.n_layers, num_attention_heads=model.n_heads,
                             num_key_value_heads=model.kv_heads, max_position_embeddings=model.seq_len,
                             rms_norm_eps=model.norm_eps, tie_word_embeddings=model.tie_embeddings,
                             attention_bias=model.bias, mlp_bias=model.bias)
        hf = LlamaForCausalLM(config)
    else:
        config = GPT2Config(vocab_size=model.vocab_size, n_embd=model.d_model, n_layer=model.n_layers,
                            n_head=model.n_heads, n_inner=model.ffn, n_positions=model.seq_len,
                            layer_norm_epsilon=model.norm_eps, tie_word_embeddings=model.tie_embeddings,
                            activation_function="gelu_new")
        hf = GPT2LMHeadModel(config)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in hf.named_parameters():
            param.normal_(1.0 if "norm" in name or ".ln_" in name else 0.0, 0.1)
    return hf.eval()


def hf_logits(hf, tokens_BT: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf(tokens_BT).logits


def our_logits(model: Transformer, tokens_BT: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(tokens_BT)


def model_overrides(fields: dict) -> list[str]:
    return [f"model.{key}={str(value).lower() if isinstance(value, bool) else value}"
            for key, value in {**SHAPE, **fields}.items()]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_tiny_corpus(tmp_path_factory.mktemp("hf_data") / "data")


@pytest.mark.parametrize("case", list(ROUNDTRIP))
def test_hf_roundtrip(case, data, tmp_path):
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "hf_in"
    args = [*TINY, *model_overrides(ROUNDTRIP[case]), f"model.init_from=hf:{folder}", f"data.dir={data}",
            f"train.runs_dir={tmp_path / 'runs'}", "train.steps=3", "checkpoint.every=3", "precision.dtype=fp32",
            "optim.warmup_steps=0"]
    cfg = load_config(None, args)
    hf = hf_model(cfg.model)
    hf.save_pretrained(folder)
    tokens_BT = torch.randint(0, cfg.model.vocab_size, (2, cfg.model.seq_len), generator=torch.Generator().manual_seed(1))

    ours = Transformer(cfg.model)
    load_initial_weights(ours, cfg.model)
    assert (our_logits(ours, tokens_BT) - hf_logits(hf, tokens_BT)).abs().max() < TOLERANCE

    start = {name: p.detach().clone() for name, p in ours.state_dict().items()}
    for layout, overrides in LAYOUTS.items():
        run_train([*args, *overrides, f"train.name={layout}"], nproc=2)
        checkpoint = find_checkpoint(tmp_path / "runs" / layout, None)
        trained = read_model_state(checkpoint)
        # Started from the folder's weights (3 Adam steps of lr 1e-3 move none far), and trained.
        moved = max((trained[name] - start[name]).abs().max().item() for name in trained)
        assert 0 < moved < 0.01, moved

        out = tmp_path / f"hf_out_{layout}"
        assert scaleplan(["export", str(tmp_path / "runs" / layout), "--out", str(out)]) == 0
        exported, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
        assert type(exported).__name__ == type(hf).__name__
        assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
        ours_trained = Transformer(cfg.model.model_copy(update={"init_from": None}))
        missing, unexpected = ours_trained.load_state_dict(trained, strict=False)
        assert set(missing) <= {"output.weight"} and not unexpected
        assert (our_logits(ours_trained, tokens_BT) - hf_logits(exported.eval(), tokens_BT)).abs().max() < TOLERANCE


@pytest.mark.parametrize("fields", [dict(arch="llama", mup=True, mup_base_width=16, n_kv_heads=2),
                                    dict(arch="gpt", n_kv_heads=2), dict(arch="gpt", mup=True, mup_base_width=8)],
                         ids=["llama_mup", "gpt_gqa", "gpt_mup"])
def test_folded_exports_compute_our_logits(fields, tmp_path):
    """What GPT-2 and Llama lack but the weights can carry: µP's multipliers folded into the query
    and head weights, grouped-query attention as repeated key/value heads (GPT-2)."""
    from transformers import AutoModelForCausalLM

    model = ModelConfig(**SHAPE, **fields)
    torch.manual_seed(0)
    ours = Transformer(model)
    with torch.no_grad():
        for param in ours.parameters():
            param.add_(0.1 * torch.randn_like(param))
    write_folder(tmp_path, to_hf(ours.state_dict(), model), model, None)
    exported, info = AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    tokens_BT = torch.randint(0, model.vocab_size, (2, model.seq_len))
    assert (our_logits(ours, tokens_BT) - hf_logits(exported.eval(), tokens_BT)).abs().max() < TOLERANCE


def test_what_cannot_be_expressed_is_refused():
    assert "qk_norm" in export_refusal(ModelConfig(qk_norm=True))
    assert "tie_embeddings" in export_refusal(ModelConfig(mup=True, tie_embeddings=True))
    assert export_refusal(ModelConfig(arch="llama", bias=True, n_heads=4, n_kv_heads=2)) is None
    assert json.loads(json.dumps(hf_config(ModelConfig(arch="llama"), None, None)))["model_type"] == "llama"


def test_export_carries_the_data_tokenizer(tmp_path):
    """Data prepared with a Hugging Face tokenizer: its files go beside the weights, AutoTokenizer
    loads them, and config.json names its end-of-text token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer

    from trainer.hf.tokenizer_files import data_tokenizer

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel()
    tokenizer.train_from_iterator(["def f(x):\n    return x\n"] * 20, trainers.BpeTrainer(
        vocab_size=280, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    data = tmp_path / "data"
    data.mkdir()
    (data / "meta.json").write_text(json.dumps({"tokenizer": str(tmp_path / "tokenizer.json")}))
    source = data_tokenizer({"data": {"dir": str(data)}})
    assert source == tmp_path / "tokenizer.json"

    model = ModelConfig(**{**SHAPE, "vocab_size": 280})
    out = tmp_path / "out"
    out.mkdir()
    write_folder(out, to_hf(Transformer(model).state_dict(), model), model, source)
    loaded = AutoTokenizer.from_pretrained(out)
    assert loaded("return x")["input_ids"] == tokenizer.encode("return x").ids
    eos = tokenizer.token_to_id("<|endoftext|>")
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == eos
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == eos


@pytest.mark.parametrize("layout", [
    pytest.param(["parallel.backend=ddp", "parallel.pp=2"], id="pp"),
    pytest.param(["parallel.backend=deepspeed", "parallel.zero_stage=3"], id="zero3", marks=pytest.mark.skipif(
        DEEPSPEED_MISSING, reason="DeepSpeed is not installed"))])
def test_export_reads_every_layout(layout, data, tmp_path):
    """Checkpoints of the layouts the round trip does not train: a pipeline's stages, DeepSpeed's gathered shards."""
    from transformers import AutoModelForCausalLM

    args = [*TINY, *model_overrides(ROUNDTRIP["llama_gqa"]), f"data.dir={data}", f"train.runs_dir={tmp_path}",
            "train.steps=2", "precision.dtype=fp32", "train.name=run", *layout]
    run_train(args, nproc=2)
    assert scaleplan(["export", str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 0
    exported, info = AutoModelForCausalLM.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    cfg = load_config(None, args)
    ours = Transformer(cfg.model)
    ours.load_state_dict(read_model_state(find_checkpoint(tmp_path / "run", None)))
    tokens_BT = torch.randint(0, cfg.model.vocab_size, (2, cfg.model.seq_len))
    assert (our_logits(ours, tokens_BT) - hf_logits(exported.eval(), tokens_BT)).abs().max() < TOLERANCE
