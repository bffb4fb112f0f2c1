"""Runs CSV formats and one-line errors for bad rows."""
from __future__ import annotations

import numpy as np
import pytest

from planner.errors import UserError
from planner.scaling.runs import read_runs

ROWS = [(1e6, 2e7, 3.1), (2e6, 4e7, 2.9), (4e6, 8e7, 2.7), (8e6, 1.6e8, 2.6), (1.6e7, 3.2e8, 2.5)]


def write(tmp_path, text: str):
    path = tmp_path / "runs.csv"
    path.write_text(text)
    return path


def test_reads_our_runs_table(tmp_path) -> None:
    text = "name,N,D,C,loss\n" + "".join(f"r{i},{n},{d},{6 * n * d},{l}\n" for i, (n, d, l) in enumerate(ROWS))
    runs = read_runs(write(tmp_path, text))
    assert np.allclose(runs.N, [r[0] for r in ROWS]) and np.allclose(runs.D, [r[1] for r in ROWS])
    assert np.allclose(runs.C, [6 * r[0] * r[1] for r in ROWS])


def test_reads_chinchilla_library_df(tmp_path) -> None:
    text = "C,N,D,loss\n" + "".join(f"{6 * n * d:f},{n:f},{d:f},{l}\n" for n, d, l in ROWS)
    assert np.allclose(read_runs(write(tmp_path, text)).loss, [r[2] for r in ROWS])


def test_derives_tokens_from_compute(tmp_path) -> None:
    text = "C,N,loss\n" + "".join(f"{6 * n * d},{n},{l}\n" for n, d, l in ROWS)
    assert np.allclose(read_runs(write(tmp_path, text)).D, [r[1] for r in ROWS])


def test_reads_epoch_column_names(tmp_path) -> None:
    text = "x,Model Size,Training FLOP,loss\n" + "".join(f"0,{n},{6 * n * d},{l}\n" for n, d, l in ROWS)
    assert np.allclose(read_runs(write(tmp_path, text)).D, [r[1] for r in ROWS])


@pytest.mark.parametrize("bad, message", [
    ("abc", r"row 4, column loss: 'abc' is not a number"),
    ("nan", r"row 4, column loss: 'nan' is not a finite number"),
    ("-1", r"row 4, column loss: -1 must be positive"),
    ("0", r"row 4, column loss: 0 must be positive"),
    ("", r"row 4, column loss: missing value"),
])
def test_bad_cell_names_row_and_column(tmp_path, bad: str, message: str) -> None:
    lines = ["N,D,loss"] + [f"{n},{d},{l}" for n, d, l in ROWS]
    lines[3] = lines[3].rsplit(",", 1)[0] + "," + bad
    with pytest.raises(UserError, match=message):
        read_runs(write(tmp_path, "\n".join(lines) + "\n"))


def test_repeated_header_is_rejected(tmp_path) -> None:
    lines = ["N,D,loss"] + [f"{n},{d},{l}" for n, d, l in ROWS]
    lines.insert(3, "N,D,loss")
    with pytest.raises(UserError, match="row 4: the header is repeated"):
        read_runs(write(tmp_path, "\n".join(lines)))


def test_missing_columns_and_too_few_runs(tmp_path) -> None:
    with pytest.raises(UserError, match="must name N, loss and D or C"):
        read_runs(write(tmp_path, "N,loss\n1,2\n"))
    text = "N,D,loss\n" + "".join(f"{n},{d},{l}\n" for n, d, l in ROWS[:4])
    with pytest.raises(UserError, match="4 runs; the 5-parameter law needs at least 5"):
        read_runs(write(tmp_path, text))
    with pytest.raises(UserError, match="not found"):
        read_runs(tmp_path / "absent.csv")


def test_drop_highest_loss() -> None:
    from planner.scaling.runs import Runs
    runs = Runs(np.arange(1.0, 7.0), np.arange(1.0, 7.0), np.array([3.0, 5.0, 1.0, 6.0, 2.0, 4.0]))
    kept = runs.without_highest_loss(2)
    assert list(kept.loss) == [3.0, 1.0, 2.0, 4.0]
