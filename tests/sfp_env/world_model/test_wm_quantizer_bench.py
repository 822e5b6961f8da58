from __future__ import annotations

import pytest
import torch

from sfp_agents.bench.quantizer_bench import QUICK, LiveTensorPeak, main, run


def test_live_tensor_peak_counts_storages_once():
    with LiveTensorPeak() as tracker:
        a = torch.empty(1000)  # 4000 bytes
        view = a.view(10, 100)  # same storage: not counted again
        tmp = torch.empty(500)  # 2000 bytes, freed below
        del tmp
        b = torch.empty(100)  # 400 bytes
    assert tracker.peak == 6000 and tracker.current == 4400
    del a, view, b


def test_run_reports_ratios_matching_the_sizes():
    n_cells, E, K, D = 20 * 20, 256, 10, 8
    out = run(E=E, K=K, D=D, grid=(20, 20), batch=1, repeats=1)
    assert out["cells"] == n_cells and out["grid"] == "20x20"
    dist_bytes, onehot_bytes = n_cells * E * 4, n_cells * K * E * 4
    # gather: the distance matrix plus O(N*K*D); one-hot: additionally the [N, K, E] matrix
    assert dist_bytes <= out["gather_peak_mb"] * 2**20 < dist_bytes + n_cells * K * (4 * D + 64)
    assert out["onehot_peak_mb"] * 2**20 >= onehot_bytes
    assert out["ratio"] > 5 and out["time_ratio"] > 0
    assert out["ratio"] == pytest.approx(out["onehot_peak_mb"] / out["gather_peak_mb"])
    assert set(QUICK) <= {"batch", "repeats", "grid", "E", "K", "D"}


def test_main_prints_table(capsys):
    assert main(["--E", "64", "--K", "4", "--D", "4", "--grid", "6", "8", "--batch", "1",
                 "--repeats", "1"]) == 0
    text = capsys.readouterr().out
    assert "index gather" in text and "one-hot matmul" in text and "6x8" in text
