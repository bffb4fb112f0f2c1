"""GPU catalog: built-in entries, extension from YAML, and one-line errors."""
from __future__ import annotations

import pytest

from planner.errors import UserError
from planner.hardware import CATALOG, GB, GIB, TERA, get_gpu, load_catalog, peak_flops

ISSUE_IDS = ("a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie", "h200", "b200", "l40s", "a10")


def test_catalog_has_the_issue_gpus_with_sane_figures():
    for gpu_id in ISSUE_IDS:
        gpu = CATALOG[gpu_id]
        assert 16 * GB < gpu.hbm_bytes < 200 * GB
        assert 50 * TERA < gpu.peak_bf16 < 5000 * TERA
        assert gpu.intra_node_bw >= gpu.network_bw > 0
    assert CATALOG["h100-sxm"].peak_bf16 == 989 * TERA          # NVIDIA datasheet, dense
    assert CATALOG["h100-sxm"].peak_fp8 == pytest.approx(2 * CATALOG["h100-sxm"].peak_bf16, rel=1e-3)


def test_yaml_adds_and_replaces(tmp_path):
    path = tmp_path / "gpus.yaml"
    path.write_text("mi300x:\n  name: AMD MI300X\n  hbm_gb: 192\n  peak_bf16_tflops: 1307\n"
                    "  intra_node_gbps: 448\n  network_gbps: 50\n"
                    "h100-sxm:\n  hbm_gib: 94\n  peak_bf16_tflops: 989\n  intra_node_gbps: 450\n  network_gbps: 50\n")
    catalog = load_catalog(str(path))
    assert catalog["mi300x"].hbm_bytes == 192 * GB
    assert catalog["mi300x"].peak_bf16 == 1307 * TERA
    assert catalog["mi300x"].peak_fp16 == catalog["mi300x"].peak_bf16   # defaults to bf16's
    assert catalog["h100-sxm"].hbm_bytes == 94 * GIB
    assert get_gpu("mi300x", str(path)).name == "AMD MI300X"
    assert peak_flops(catalog["mi300x"], "bf16") == 1307 * TERA
    assert "mi300x" not in CATALOG   # the built-in catalog is untouched


@pytest.mark.parametrize("text,match", [
    ("x:\n  hbm_gib: 10\n", "lacks"),
    ("x:\n  hbm_gib: ten\n  peak_bf16_tflops: 1\n  intra_node_gbps: 1\n  network_gbps: 1\n", "not a number"),
    ("x:\n  colour: red\n", "unknown field 'colour'"),
    ("- a\n- b\n", "must map GPU ids"),
    ("x: [1\n", "not valid YAML"),
])
def test_bad_catalog_files(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=match):
        load_catalog(str(path))


def test_unknown_gpu_lists_known_ids():
    with pytest.raises(UserError, match="unknown GPU 'h300'.*h100-sxm"):
        get_gpu("h300")
    with pytest.raises(UserError, match="not found"):
        load_catalog("/nonexistent/gpus.yaml")
