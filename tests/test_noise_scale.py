"""The gradient noise scale (McCandlish et al. 2018's simple estimate) measured from a micro-batch's
and a step's gradient norms: right on a problem whose gradient covariance is known, logged by the
trainer, and used by `scaleplan next --batch-from` to size the next run's batch."""
import json

import pytest
import torch

from trainer.noise_scale import GradientNoiseScale


def test_noise_scale_on_linear_regression():
    """Loss ½(x·w − y)², y = x·w* + ε, x ~ N(0, I_d), ε ~ N(0, σ²), at w = w* + u: the per-example
    gradient g = x(x·u − ε) has mean G = u and E|g|² = (d + 2)|u|² + dσ², so
    B = tr Σ / |G|² = ((d + 1)|u|² + dσ²) / |u|² (Gaussian fourth moments). Steps are built as the
    trainer builds them: n_micro micro-batches, the first one's gradient is the small batch."""
    generator = torch.Generator().manual_seed(0)
    d, sigma, micro, n_micro, steps = 16, 1.5, 4, 8, 3000
    u = torch.randn(d, generator=generator)
    u = u / u.norm() * 0.8
    analytic = ((d + 1) * u.square().sum() + d * sigma ** 2) / u.square().sum()
    meter = GradientNoiseScale(micro, micro * n_micro, torch.device("cpu"), decay=0.999)
    for _ in range(steps):
        x = torch.randn(n_micro, micro, d, generator=generator)
        noise = sigma * torch.randn(n_micro, micro, generator=generator)
        per_example = x * ((x @ u) - noise).unsqueeze(-1)           # (n_micro, micro, d)
        micro_means = per_example.mean(dim=1)
        meter.observe(micro_means[0].square().sum(), micro_means.mean(dim=0).square().sum())
    assert meter.value() == pytest.approx(float(analytic), rel=0.20), (meter.value(), float(analytic))


def test_skipped_steps_are_not_counted():
    meter = GradientNoiseScale(4, 32, torch.device("cpu"))
    meter.observe(torch.tensor(2.0), torch.tensor(1.0))
    before = meter.averages().clone()
    meter.observe(torch.tensor(1e9), torch.tensor(1.0), keep=torch.tensor(False))
    meter.observe(torch.tensor(float("nan")), torch.tensor(1.0))
    assert torch.equal(meter.averages(), before)


@pytest.mark.slow
def test_trainer_logs_it_and_next_uses_it(tmp_path, capsys):
    from launch.cli import main as cli
    from tests.helpers import TINY, run_train, write_tiny_corpus
    from trainer.config import load_config

    data = write_tiny_corpus(tmp_path / "data")
    runs = tmp_path / "runs"
    out = run_train([*TINY, f"data.dir={data}", f"train.runs_dir={runs}", "train.steps=20",
                     "train.global_batch=16", "parallel.micro_batch=2", "train.name=noisy"],
                    nproc=2).stdout   # 4 micro-batches of 2 per rank per step
    records = [json.loads(line) for line in (runs / "noisy" / "metrics.jsonl").read_text().splitlines()]
    measured = [r["grad_noise_scale"] for r in records if "grad_noise_scale" in r]
    assert measured and all(value > 0 for value in measured)
    assert f"gradient noise scale {measured[-1]:,.0f} tokens" in out
    # `next` takes the batch from it: the critical batch in whole micro-batches
    (runs / "runs.csv").write_text("name,N,D,C,loss\n" + "".join(
        f"r{i},{n:.0f},{d:.0f},{6 * n * d:.0f},{1.8 + 400 / n ** 0.3 + 900 / d ** 0.3:.5f}\n"
        for i, (n, d) in enumerate([(n, d) for n in (2e5, 4e5, 8e5, 1.6e6) for d in (4e6, 1.6e7, 6.4e7)])))
    target = tmp_path / "next.yaml"
    assert cli(["next", str(runs / "runs.csv"), "--batch-from", str(runs / "noisy"), "--out", str(target)]) == 0
    cfg = load_config(target)
    micro_tokens = cfg.parallel.micro_batch * cfg.model.seq_len
    assert cfg.global_batch == max(1, round(measured[-1] / micro_tokens)) * cfg.parallel.micro_batch \
        or cfg.train.steps >= 50   # plan_batch may halve it to keep enough steps
    assert "measured critical batch" in capsys.readouterr().out


def test_next_without_a_measurement_is_one_line(tmp_path, capsys):
    from launch.cli import main as cli

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 5.0}\n')
    (tmp_path / "runs.csv").write_text("name,N,D,C,loss\n" + "".join(
        f"r{i},{n:.0f},{d:.0f},{6 * n * d:.0f},{1.8 + 400 / n ** 0.3 + 900 / d ** 0.3:.5f}\n"
        for i, (n, d) in enumerate([(n, d) for n in (2e5, 4e5, 8e5, 1.6e6) for d in (4e6, 1.6e7, 6.4e7)])))
    with pytest.raises(SystemExit) as exit_info:
        cli(["next", str(tmp_path / "runs.csv"), "--batch-from", str(tmp_path), "--out", str(tmp_path / "n.yaml")])
    assert exit_info.value.code == 2
    assert "has no grad_noise_scale" in capsys.readouterr().err
