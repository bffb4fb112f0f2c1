"""Each guard alone: z-loss, the spike guard's window and decisions, the bad-window filter, QK-norm,
checkpoint manifests."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainer.config import GuardConfig, ModelConfig
from trainer.data import BatchFilter
from trainer.faults import poison_gradient
from trainer.guards import SpikeGuard
from trainer.manifest import describe_files, manifest_problem, write_manifest
from trainer.model import Transformer

NAN = float("nan")


def test_z_loss():
    """The loss is cross-entropy plus coefficient × mean(log Z)² in training, and the gradient of the
    z term pulls log Z towards 0; evaluation (no coefficient) is plain cross-entropy."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(n_layers=1, d_model=32, n_heads=2, seq_len=16))
    idx = torch.randint(0, 256, (2, 16))
    logits = model(idx).float().view(-1, 256)
    ce = F.cross_entropy(logits, idx.view(-1))
    log_z = torch.logsumexp(logits, dim=-1)
    assert model(idx, idx, z_loss=1e-2).item() == pytest.approx((ce + 1e-2 * log_z.pow(2).mean()).item(), rel=1e-6)
    assert model(idx, idx).item() == pytest.approx(ce.item(), rel=1e-6)
    # the z term alone: a step along its gradient lowers mean (log Z)²
    model.zero_grad()
    (model(idx, idx, z_loss=1.0) - model(idx, idx)).backward()
    before = log_z.pow(2).mean().item()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 1e-2 * p.grad
    after = torch.logsumexp(model(idx).float().view(-1, 256), dim=-1).pow(2).mean().item()
    assert after < before


def guard(**changes) -> SpikeGuard:
    return SpikeGuard(GuardConfig(**{"spike_window": 8, "spike_min_history": 3, **changes}), torch.device("cpu"))


def check(g: SpikeGuard, loss: float, norm: float = 1.0) -> bool:
    return bool(g.check(torch.tensor(loss), torch.tensor(norm)))


def test_non_finite_loss_or_norm_is_always_skipped_and_not_recorded():
    g = guard()
    assert check(g, NAN) and check(g, 3.0, float("inf")) and check(g, float("inf"))
    assert int(g.count) == 0 and int(g.skipped) == 3


def test_a_rise_that_holds_becomes_the_new_level():
    """The gradient norm doubles for good: the first level_shift_steps - 1 steps of the rise are
    skipped, the next is applied as the new level, and the noise around that level passes."""
    g = guard(level_shift_steps=3, spike_min_norm_jump=0.5)
    rng = np.random.default_rng(0)
    for _ in range(8):
        assert not check(g, 3.0, 1.0 + 0.02 * rng.standard_normal())
    decisions = [check(g, 3.0, 2.0 + 0.04 * rng.standard_normal()) for _ in range(20)]
    assert decisions[:3] == [True, True, False] and not any(decisions[3:])
    assert check(g, 3.0, 6.0)   # a spike above the new level is still a spike


def test_a_lone_spike_or_a_nan_breaks_the_run_of_rises():
    """Rises interrupted by an ordinary step or a non-finite one never add up to a new level."""
    g = guard(level_shift_steps=3, spike_min_norm_jump=0.5)
    for _ in range(8):
        check(g, 3.0, 1.0)
    pattern = [(2.0, True), (2.0, True), (1.0, False), (2.0, True), (NAN, True), (2.0, True), (2.0, True)]
    assert [check(g, 3.0, norm) for norm, _ in pattern] == [skip for _, skip in pattern]
    off = guard(level_shift_steps=0, spike_min_norm_jump=0.5)
    for _ in range(8):
        check(off, 3.0, 1.0)
    assert all(check(off, 3.0, 2.0) for _ in range(6))   # without the rule every step of the rise is skipped


def test_spikes_after_enough_history_only():
    young = guard()
    assert not check(young, 3.0) and not check(young, 30.0)  # too little history to call it a spike
    g = guard()
    for loss in (3.0, 2.9, 3.1, 3.0):
        assert not check(g, loss)
    assert check(g, 30.0)                                   # now far above the window
    assert check(g, 3.0, norm=50.0)                         # a gradient-norm spike alone
    assert not check(g, 3.05)                               # small noise is no spike (min jump)
    assert not check(guard(spike_sigma=0), 1e6)             # spike_sigma=0 disables


def test_window_state_round_trip_and_resize():
    g = guard()
    for loss in (3.0, 2.9, 3.1, 3.0, 2.8):
        check(g, loss)
    restored = guard()
    restored.load_state_dict(g.state_dict())
    assert torch.equal(restored.history, g.history) and int(restored.count) == 5
    assert check(restored, 30.0)                            # guarded from the first step after a resume
    smaller = guard(spike_window=3)
    smaller.load_state_dict(g.state_dict())                 # the newest 3 accepted values survive
    assert sorted(smaller.history[0].tolist()) == pytest.approx([2.8, 3.0, 3.1])


def test_rollback_wanted_after_enough_recent_skips():
    g = guard(rollback_after=2, rollback_window=4)
    check(g, NAN)
    assert not g.wants_rollback()
    check(g, 3.0)
    check(g, NAN)
    assert g.wants_rollback()
    g.clear_recent()
    assert not g.wants_rollback()


def test_poisoned_gradient_is_nan_and_value_unchanged():
    x = torch.tensor([2.0], requires_grad=True)
    y = poison_gradient(x * 3)
    y.sum().backward()
    assert y.item() == 6.0 and math.isnan(x.grad.item())


@pytest.mark.parametrize("window,problem", [
    ([7] * 40, "a pattern of 1 token(s) repeated"),
    ([1, 2] * 20, "a pattern of 2 token(s) repeated"),
    ([47, 47, 47, 10] * 10, "a pattern of 4 token(s) repeated"),
    (list(range(40)) + [300], "token id 300 >= vocab 256"),
    (list(np.random.default_rng(0).integers(0, 256, 40)), None),
])
def test_bad_window_filter(window, problem):
    assert BatchFilter(256).problem(np.asarray(window)) == problem


def test_qk_norm_adds_two_head_norms_per_layer_and_the_planner_counts_them():
    from planner.model_spec import count_params

    plain, normed = ModelConfig(n_layers=2, d_model=64, n_heads=4), ModelConfig(n_layers=2, d_model=64, n_heads=4,
                                                                                qk_norm=True)
    for cfg in (plain, normed):
        assert sum(p.numel() for p in Transformer(cfg).parameters()) == count_params(cfg.spec())
    assert count_params(normed.spec()) - count_params(plain.spec()) == 2 * 2 * 16


def test_manifest_finds_missing_short_and_changed_files(tmp_path):
    for name, content in (("a.bin", b"x" * 100), ("b.bin", b"y" * 10)):
        (tmp_path / name).write_bytes(content)
    write_manifest(tmp_path, describe_files(tmp_path, ["a.bin", "b.bin"]), step=3)
    assert manifest_problem(tmp_path) is None
    (tmp_path / "b.bin").write_bytes(b"z" * 10)
    assert "b.bin does not match its checksum" == manifest_problem(tmp_path)
    assert manifest_problem(tmp_path, checksums=False) is None
    (tmp_path / "a.bin").write_bytes(b"x" * 50)
    assert "a.bin has 50 bytes" in manifest_problem(tmp_path)
    (tmp_path / "a.bin").unlink()
    assert manifest_problem(tmp_path) == "a.bin is missing"
    (tmp_path / "manifest.json").unlink()
    assert "no manifest" in manifest_problem(tmp_path)
