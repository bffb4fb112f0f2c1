"""Our `model` section and a Hugging Face `config.json`: the config an export writes, the check an
import makes (a mismatch names our field), and what the target classes cannot express."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

from planner.errors import UserError
from trainer.config import ModelConfig

HF_CLASS = {"llama": "LlamaForCausalLM", "gpt": "GPT2LMHeadModel"}
HF_MODEL_TYPE = {"llama": "llama", "gpt": "gpt2"}
# GPT2's names for the tanh approximation of GeLU that our MLP computes (identical formulas).
GELU_TANH = ("gelu_pytorch_tanh", "gelu_new")


def export_refusal(model: ModelConfig) -> Optional[str]:
    """Why `model` has no exact `transformers` twin, or None. µP's multipliers are folded into the
    weights (query projection, untied head); a tied head would scale the embeddings too."""
    target = HF_CLASS[model.arch]
    if model.qk_norm:
        return f"model.qk_norm=true: {target} has no per-head query/key norm, so its logits would differ"
    if model.mup and model.tie_embeddings:
        return (f"model.mup=true with model.tie_embeddings=true: µP's output multiplier cannot be folded into "
                f"a head shared with the embeddings, and {target} has no logit multiplier")
    return None


def import_refusal(model: ModelConfig) -> Optional[str]:
    """Why a run with `model` cannot start from a `transformers` folder, or None."""
    if model.mup:
        return "model.mup=true: Hugging Face weights carry no µP multipliers; start from them with model.mup=false"
    if model.qk_norm:
        return "model.qk_norm=true: Hugging Face Llama and GPT-2 weights have no query/key norm; set model.qk_norm=false"
    return None


def hf_config(model: ModelConfig, bos_token_id: Optional[int], eos_token_id: Optional[int]) -> dict:
    """config.json for `model`'s `transformers` class."""
    shared = {"architectures": [HF_CLASS[model.arch]], "model_type": HF_MODEL_TYPE[model.arch],
              "vocab_size": model.vocab_size, "tie_word_embeddings": model.tie_embeddings,
              "bos_token_id": bos_token_id, "eos_token_id": eos_token_id, "dtype": "float32",
              "initializer_range": model.init_std, "use_cache": True}
    if model.arch == "llama":
        return {**shared, "hidden_size": model.d_model, "intermediate_size": model.ffn,
                "num_hidden_layers": model.n_layers, "num_attention_heads": model.n_heads,
                "num_key_value_heads": model.kv_heads, "head_dim": model.d_model // model.n_heads,
                "hidden_act": "silu", "max_position_embeddings": model.seq_len, "rms_norm_eps": model.norm_eps,
                # rope_parameters for transformers 5, rope_theta for the readers before it
                "rope_parameters": {"rope_type": "default", "rope_theta": model.rope_theta}, "rope_theta": model.rope_theta,
                "attention_bias": model.bias, "mlp_bias": model.bias, "attention_dropout": 0.0}
    # GPT-2 has no grouped-query attention: the export repeats each key/value head for its queries.
    return {**shared, "n_embd": model.d_model, "n_inner": model.ffn, "n_layer": model.n_layers,
            "n_head": model.n_heads, "n_positions": model.seq_len, "activation_function": "gelu_pytorch_tanh",
            "layer_norm_epsilon": model.norm_eps, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
            "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False}


def read_hf_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise UserError(f"model.init_from: no config.json in {folder}: give a folder written by save_pretrained "
                        f"or `scaleplan export`")
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise UserError(f"model.init_from: {path} is not JSON ({error})") from None
    if not isinstance(config, dict):
        raise UserError(f"model.init_from: {path} is not a JSON object")
    return config


def check_hf_config(model: ModelConfig, config: dict, folder: Path) -> None:
    """UserError naming the first `model.*` field the folder's config.json disagrees with, or what
    our model cannot be (rotary scaling, a different activation)."""
    where = f"{folder}/config.json"
    model_type = config.get("model_type")
    if model_type not in HF_MODEL_TYPE.values():
        raise UserError(f"{where} holds a '{model_type}' model: model.init_from takes llama (LlamaForCausalLM) "
                        f"or gpt2 (GPT2LMHeadModel) folders")
    arch = "llama" if model_type == "llama" else "gpt"
    if model.arch != arch:
        raise UserError(f"{where} is a {model_type} model ({HF_CLASS[arch]}) but model.arch={model.arch}: "
                        f"set model.arch={arch}")
    refusal = import_refusal(model) or _unsupported(config, arch)
    if refusal:
        raise UserError(f"{where}: {refusal}")
    for field, key, theirs, ours in _pairs(model, config, arch):
        if not _same(theirs, ours):
            raise UserError(f"{where} has {key}={theirs} but model.{field}={ours}: set model.{field}={theirs}")
    if arch == "gpt" and config.get("n_positions", 1024) < model.seq_len:
        raise UserError(f"{where} has n_positions={config.get('n_positions', 1024)} learned positions but "
                        f"model.seq_len={model.seq_len}: set model.seq_len at most {config.get('n_positions', 1024)}")


def _pairs(model: ModelConfig, config: dict, arch: str) -> list[tuple[str, str, object, object]]:
    """(our field, their key, their value, our value) for everything that shapes the weights or the logits."""
    if arch == "llama":
        heads = config.get("num_attention_heads")
        rope = config.get("rope_parameters") or {}
        return [("n_layers", "num_hidden_layers", config.get("num_hidden_layers"), model.n_layers),
                ("d_model", "hidden_size", config.get("hidden_size"), model.d_model),
                ("n_heads", "num_attention_heads", heads, model.n_heads),
                ("n_kv_heads", "num_key_value_heads", config.get("num_key_value_heads") or heads, model.kv_heads),
                ("ffn_hidden", "intermediate_size", config.get("intermediate_size"), model.ffn),
                ("vocab_size", "vocab_size", config.get("vocab_size"), model.vocab_size),
                ("tie_embeddings", "tie_word_embeddings", config.get("tie_word_embeddings", False), model.tie_embeddings),
                ("bias", "attention_bias", config.get("attention_bias", False), model.bias),
                ("bias", "mlp_bias", config.get("mlp_bias", False), model.bias),
                ("norm_eps", "rms_norm_eps", config.get("rms_norm_eps", 1e-6), model.norm_eps),
                ("rope_theta", "rope_theta", rope.get("rope_theta", config.get("rope_theta", 10000.0)), model.rope_theta)]
    embd = config.get("n_embd", 768)
    return [("n_layers", "n_layer", config.get("n_layer", 12), model.n_layers),
            ("d_model", "n_embd", embd, model.d_model),
            ("n_heads", "n_head", config.get("n_head", 12), model.n_heads),
            ("n_kv_heads", "n_head", config.get("n_head", 12), model.kv_heads),
            ("ffn_hidden", "n_inner", config.get("n_inner") or 4 * embd, model.ffn),
            ("vocab_size", "vocab_size", config.get("vocab_size", 50257), model.vocab_size),
            ("tie_embeddings", "tie_word_embeddings", config.get("tie_word_embeddings", True), model.tie_embeddings),
            ("norm_eps", "layer_norm_epsilon", config.get("layer_norm_epsilon", 1e-5), model.norm_eps)]


def _unsupported(config: dict, arch: str) -> Optional[str]:
    """What in a folder of the right class our model still does not compute."""
    if arch == "llama":
        rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
        kind = rope.get("rope_type", rope.get("type", "default"))
        if kind != "default":
            return f"rotary scaling '{kind}' is not what our rotary embeddings compute (plain RoPE only)"
        head_dim = config.get("head_dim")
        if head_dim and head_dim * config.get("num_attention_heads", 0) != config.get("hidden_size"):
            return f"head_dim={head_dim} is not hidden_size / num_attention_heads, as our attention's is"
        if config.get("hidden_act", "silu") != "silu":
            return f"hidden_act={config['hidden_act']}: our Llama MLP is SwiGLU (silu)"
        return None
    if config.get("activation_function", "gelu_new") not in GELU_TANH:
        return f"activation_function={config['activation_function']}: our GPT MLP is the tanh GeLU ({GELU_TANH[0]})"
    if not config.get("scale_attn_weights", True) or config.get("scale_attn_by_inverse_layer_idx", False):
        return "attention scaled other than by 1/sqrt(head_dim), which our attention uses"
    return None


def _same(theirs: object, ours: object) -> bool:
    if isinstance(theirs, float) or isinstance(ours, float):
        return isinstance(theirs, (int, float)) and math.isclose(float(theirs), float(ours), rel_tol=1e-9)
    return theirs == ours
