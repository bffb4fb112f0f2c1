"""Activation memory: the tensors autograd saves for backward, per layer and per micro-batch.

Follows the derivation of Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
Transformer Models", §4): per layer, s·b·h·(34 + 5·a·s/h) bytes without parallelism in 16-bit, of
which the part inside the tensor-parallel region divides by t, the rest (norms, their inputs) by t
only with sequence parallelism, the 5·a·s² part disappears with selective recomputation, and full
recomputation keeps only each layer's input (2·s·b·h).

Rather than the paper's constants (GPT, dropout, 16-bit everywhere), the terms are written out for
the trainer's model (trainer/model.py) and checked against the tensors it really saves
(tests/test_memory_activations_measured.py):

- a norm saves its input (residual dtype) and statistics (LayerNorm: fp32 mean and rstd per token;
  RMSNorm via `F.rms_norm`: fp32 rstd plus the normalised input); the next matmuls save its output
  (under autocast with fp32 parameters, one 16-bit copy shared by the fused QKV projection, or by
  SwiGLU's gate and up projections);
- attention saves Q, K (after RoPE), V and the output O (the output projection's input is a view of
  O) plus an fp32 log-sum-exp per head: flash attention (on GPU, and PyTorch's CPU flash kernel)
  keeps no s×s scores, so the 5·a·s² term only applies with `attention="math"`;
- the MLP saves 2·ffn (GeLU: its input and output) or 4·ffn (SwiGLU: gate, up, SiLU output, product);
- no dropout (the trainer has none), so Korthikanti's 34 becomes 32 for GPT in 16-bit.

Under autocast with fp32 parameters (DDP) the residual stream and norms stay fp32 while matmul
inputs are 16-bit copies; with 16-bit parameters (FSDP2 mixed precision, DeepSpeed) everything is 16-bit.
"""
from __future__ import annotations

import numpy as np

from planner.model_spec import ModelSpec



def norm_bytes_per_token(spec: ModelSpec, act_bytes, residual_bytes) -> dict[str, np.ndarray]:
    """One norm: its input and statistics (`own`: split along the sequence under sequence
    parallelism), and the one compute-dtype copy of its output that the next matmuls share
    (`output`: under sequence parallelism whole when the column-parallel matmul saves the
    all-gathered input, split under lean SP). The trainer casts once, not once per consuming matmul."""
    act_bytes, residual_bytes = np.asarray(act_bytes, float), np.asarray(residual_bytes, float)
    if spec.arch == "llama":   # F.rms_norm (composite): input, fp32 rstd, x·rstd
        own = 2 * residual_bytes * spec.d_model + 4
    else:                      # LayerNorm: input, fp32 mean and rstd
        own = residual_bytes * spec.d_model + 8
    return {"own": own, "output": act_bytes * spec.d_model}


def layer_terms_per_token(spec: ModelSpec, act_bytes, residual_bytes,
                          attention: str = "flash") -> dict[str, np.ndarray]:
    """Bytes per token of one layer, split as Korthikanti et al. split them:
    `replicated` (outside the TP region: norms' inputs; divided by t only with sequence parallelism),
    `gathered` (the norms' outputs as the column-parallel matmuls save them: divided by t only
    under lean sequence parallelism),
    `split` (inside it: Q, K, V, O, MLP; divided by t), `quadratic` (s×s attention scores; divided
    by t, removed by selective recomputation; zero with flash attention)."""
    act_bytes, residual_bytes = np.asarray(act_bytes, float), np.asarray(residual_bytes, float)
    h, kv_dim, f = spec.d_model, spec.kv_heads * spec.head_dim, spec.ffn
    norm = norm_bytes_per_token(spec, act_bytes, residual_bytes)
    attention_saved = act_bytes * (h + 2 * kv_dim + h) + 4 * spec.n_heads   # Q K V O + fp32 lse
    mlp_saved = act_bytes * f * (4 if spec.arch == "llama" else 2)
    quadratic = act_bytes * spec.n_heads * spec.seq_len if attention == "math" else 0 * act_bytes
    return {"replicated": 2 * norm["own"], "gathered": 2 * norm["output"], "split": attention_saved + mlp_saved,
            "quadratic": quadratic}


def layer_activation_bytes(spec: ModelSpec, micro_batch, tp, sp, recompute, act_bytes,
                           residual_bytes, attention: str = "flash", cp=1, lean_sp=True) -> dict[str, np.ndarray]:
    """Bytes one layer keeps for one micro-batch (`stored`), and the working set of one layer that
    full recomputation rebuilds during its backward (`recompute_peak`, zero otherwise).

    recompute: indices into candidates.RECOMPUTE (0 none, 1 selective, 2 full); arrays broadcast.
    lean_sp: under sequence parallelism the column-parallel matmuls save their input as the sequence
    shard and all-gather it again in backward, so `gathered` divides by t too (else it stays whole).
    cp: each rank holds 1/cp of every sequence's tokens, and attention saves the K and V all-gathered
    over the cp group (the whole sequence, heads split by t) in place of its local ones, and its
    output twice (per chunk, and joined).
    """
    tokens = np.asarray(micro_batch) * spec.seq_len / np.asarray(cp)
    tp, sp, recompute = np.asarray(tp), np.asarray(sp, bool), np.asarray(recompute)
    terms = layer_terms_per_token(spec, act_bytes, residual_bytes, attention)
    sequence_divisor = np.where(sp, tp, 1)
    gathered_divisor = np.where(sp & np.asarray(lean_sp, bool), tp, 1)
    kv_per_token = 2 * np.asarray(act_bytes, float) * spec.kv_heads * spec.head_dim / tp
    gathered_kv = (np.asarray(micro_batch) * spec.seq_len - tokens) * kv_per_token   # zero without CP
    # Under CP the trainer runs attention once per local chunk (each call saves its output) and the
    # output projection saves their concatenation: one more copy of O per token.
    chunked_output = np.where(np.asarray(cp) > 1, np.asarray(act_bytes, float) * spec.d_model / tp, 0.0)
    full_layer = (tokens * (terms["replicated"] / sequence_divisor + terms["gathered"] / gathered_divisor
                            + (terms["split"] + terms["quadratic"]) / tp + chunked_output) + gathered_kv)
    selective_layer = full_layer - tokens * terms["quadratic"] / tp
    layer_input = tokens * residual_bytes * spec.d_model / sequence_divisor
    stored = np.select([recompute == 0, recompute == 1], [full_layer, selective_layer], layer_input)
    return {"stored": stored, "recompute_peak": np.where(recompute == 2, full_layer, 0.0)}


def korthikanti_layer_bytes(spec: ModelSpec, micro_batch, tp, sp, recompute, cp=1) -> dict[str, np.ndarray]:
    """One layer's activations exactly as Korthikanti et al. 2022 count them (16-bit GPT layer with
    dropout, attention scores materialised; their Table 2): s·b·h·(10 + 24/t + 5·a·s/(h·t)) bytes
    with tensor parallelism, s·b·h/t·(34 + 5·a·s/h) with sequence parallelism as well; selective
    recomputation drops the 5·a·s/h term, full recomputation keeps 2·s·b·h (/t with SP) per layer.
    The `megatron` accounting; same keys as `layer_activation_bytes`; context parallelism divides
    the tokens a rank holds by cp."""
    tokens_h = np.asarray(micro_batch) * spec.seq_len * spec.d_model / np.asarray(cp)
    tp, sp, recompute = np.asarray(tp, float), np.asarray(sp, bool), np.asarray(recompute)
    scores = 5.0 * spec.n_heads * spec.seq_len / (spec.d_model * tp)
    linear = np.where(sp, 34.0 / tp, 10.0 + 24.0 / tp)
    full_layer = tokens_h * (linear + scores)
    stored = np.select([recompute == 0, recompute == 1], [full_layer, tokens_h * linear],
                       2.0 * tokens_h / np.where(sp, tp, 1.0))
    return {"stored": stored, "recompute_peak": np.where(recompute == 2, full_layer, 0.0)}


def embedding_bytes(spec: ModelSpec, micro_batch) -> np.ndarray:
    """First stage, per micro-batch: the token ids the embedding keeps (int64), and for GPT the
    position ids (one row shared by the batch)."""
    positions = 8 * spec.seq_len if spec.arch == "gpt" else 0
    return 8 * np.asarray(micro_batch) * spec.seq_len + positions


def head_bytes(spec: ModelSpec, micro_batch, tp, sp, act_bytes, residual_bytes, lean_sp=True) -> np.ndarray:
    """Last stage, per micro-batch, before the logits: the final norm, the head's input (its
    sequence shard under lean SP: the head is a column-parallel matmul too), the targets (int64)
    and the loss's scalar."""
    tokens = np.asarray(micro_batch) * spec.seq_len
    divisor = np.where(np.asarray(sp, bool), tp, 1)
    gathered_divisor = np.where(np.asarray(sp, bool) & np.asarray(lean_sp, bool), tp, 1)
    norm = norm_bytes_per_token(spec, act_bytes, residual_bytes)
    return tokens * (norm["own"] / divisor + norm["output"] / gathered_divisor + 8) + 4


def logits_bytes(spec: ModelSpec, micro_batch, tp, act_bytes) -> dict[str, np.ndarray]:
    """Logits per micro-batch (vocab-parallel over TP): the fp32 log-softmax the loss saves
    (`saved`), and what is alive with it at the loss: the logits themselves and, when they are
    16-bit, their fp32 copy (`transient`)."""
    per_token = spec.vocab_size / np.asarray(tp)
    tokens = np.asarray(micro_batch) * spec.seq_len
    act_bytes = np.asarray(act_bytes, float)
    upcast = np.where(act_bytes < 4, 4.0, 0.0)
    return {"saved": tokens * per_token * 4.0, "transient": tokens * per_token * (act_bytes + upcast)}


def micro_batches_in_flight(stage, pp, n_micro, schedule, vpp) -> np.ndarray:
    """Micro-batches whose activations a pipeline stage holds at its peak, in units of one
    micro-batch through all of the stage's layers.

    GPipe: all m (Huang et al. 2019). 1F1B: p − i at stage i (Narayanan et al. 2021), at most m.
    Interleaved 1F1B with v chunks: Megatron's warm-up of 2(p − i − 1) + (v − 1)p chunk passes plus
    one, each 1/v of the stage's layers, i.e. p + (p − 1)/v at stage 0 (Korthikanti et al. 2022
    §4.2.3). schedule: 0 gpipe, 1 1f1b, 2 interleaved.
    """
    stage, pp, n_micro, schedule, vpp = (np.asarray(x, float) for x in (stage, pp, n_micro, schedule, vpp))
    one_f_one_b = np.minimum(pp - stage, n_micro)
    interleaved = np.minimum((2 * (pp - stage - 1) + (vpp - 1) * pp + 1) / vpp, n_micro)
    held = np.select([schedule == 0, schedule == 1], [n_micro, one_f_one_b], interleaved)
    return np.where(pp == 1, 1.0, held)
