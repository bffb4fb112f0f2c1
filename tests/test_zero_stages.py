"""FSDP2's three ZeRO stages differ as parallel/layout.py says, in the torch engine and in a pipeline's
schedule alike (tests/zero_stage_probe.py on 4 gloo ranks, one step of 4 micro-batches): between
micro-batches stage 1 keeps the weights gathered and the whole gradient unreduced, stage 2 keeps the
weights gathered but has reduce-scattered the gradient, stage 3 has resharded both; after the step
every stage holds shards only. (That each trains like one process: tests/test_parity_frontier.py.)"""
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow
# what a block holds after a micro-batch's backward that is not the step's last
BETWEEN = {1: {"gathered": True, "whole_grad": True, "shard_grad": False},
           2: {"gathered": True, "whole_grad": False, "shard_grad": False},
           3: {"gathered": False, "whole_grad": False, "shard_grad": True}}


@pytest.fixture(scope="module")
def held():
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4",
               str(REPO / "tests" / "zero_stage_probe.py")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("ZERO_STAGES "))
    return json.loads(line.split(" ", 1)[1])


@pytest.mark.parametrize("path", ["fsdp", "fsdp_pp"])
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_between_micro_batches(held, path, stage):
    records = held[f"{path}_zero{stage}"]
    assert len(records) == 4 + 1                # each micro-batch's backward, then the step
    for record in records[:3]:
        assert record == BETWEEN[stage], records
    assert not records[-1]["gathered"] and not records[-1]["whole_grad"], records   # shards after the step
