"""Pipeline cuts that cannot run, given to launch/train.py: one line naming the problem and exit code
2, before any process group exists (every rank of a torchrun job says it without waiting for the
others). The rules are parallel/layout.py's, which the planner's --layout obeys too."""
import pytest

from tests.helpers import TINY, write_tiny_corpus
from tests.test_train_errors import one_line_error, one_line_error_before_any_group

FOUR_LAYERS = ["model.n_layers=4"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_corpus(tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize("overrides,nproc,fragment", [
    (["parallel.pp=2", "parallel.pp_layers=[1,2]"], 2, "pp_layers=1,2 sums to 3 blocks, but the model has 4"),
    (["parallel.pp=2", "parallel.pp_layers=[2,3]"], 2, "pp_layers=2,3 sums to 5 blocks, but the model has 4"),
    (["parallel.pp=2", "parallel.pp_layers=[0,4]"], 2, "pp_layers=0,4 has an empty stage"),
    (["parallel.pp=2", "parallel.pp_layers=[4,0]"], 2, "pp_layers=4,0 has an empty stage"),
    (["parallel.pp=2", "parallel.pp_layers=[1,1,2]"], 2, "pp_layers=1,1,2 gives 3 stages, but pp 2 × vpp 1 = 2"),
    (["parallel.pp=2", "parallel.pp_schedule=interleaved", "parallel.vpp=2", "parallel.pp_layers=[2,2]"], 2,
     "pp_layers=2,2 gives 2 stages, but pp 2 × vpp 2 = 4"),
    (["parallel.pp=4"], 4, "pp=4 × vpp=1 is more pipeline stages than the 2 layers"),
    (["parallel.backend=fsdp", "parallel.pp=2", "parallel.pp_schedule=zero_bubble", "parallel.vpp=2"], 4,
     "pp_schedule=zero_bubble computes weight gradients against resharded weights"),
], ids=["short", "long", "empty-first", "empty-last", "three-cuts-two-stages", "interleaved-needs-four",
                      "more-stages-than-layers", "zero-bubble-fsdp-zero3"])
def test_bad_pipeline_cut(tmp_path, data, monkeypatch, capsys, overrides, nproc, fragment):
    model = [] if overrides == ["parallel.pp=4"] else FOUR_LAYERS
    line = one_line_error_before_any_group([*TINY, *model, f"data.dir={data}", f"train.runs_dir={tmp_path}",
                                            *overrides], tmp_path, monkeypatch, capsys, world_size=nproc)
    assert fragment in line and line.startswith("launch/train.py: "), line
    assert "parallel.pp_layers" in line or "parallel.pp" in line   # named as the config spells it


def test_bad_pipeline_cut_from_the_command_line(tmp_path, data):
    """The real `python launch/train.py`: a cut for two stages in a one-stage run, one line, exit 2."""
    line = one_line_error([*TINY, *FOUR_LAYERS, f"data.dir={data}", f"train.runs_dir={tmp_path}",
                           "parallel.pp_layers=[2,2]"], tmp_path, real_process=True)
    assert "pp_layers=2,2 gives 2 stages, but pp 1 × vpp 1 = 1" in line
    assert not (tmp_path / "default").exists()   # refused before anything was written
