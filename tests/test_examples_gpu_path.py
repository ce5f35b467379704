"""The GPU preset's code path (bf16-mixed autocast, torch.compile, fused-optimizer switch,
same schedule) on a CPU at tiny size: only the device and the sizes differ from --preset gpu."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

from gpt import train  # noqa: E402
from test_examples import event_files, run_script  # noqa: E402


def test_gpu_tiny_differs_from_gpu_only_in_device_and_size():
    gpu, tiny = train.PRESETS["gpu"], train.PRESETS["gpu-tiny"]
    same = {"precision", "compile"}
    for name in same:
        assert getattr(tiny, name) == getattr(gpu, name), name
    for f in fields(gpu.optim):
        if f.name != "warmup_steps":
            assert getattr(tiny.optim, f.name) == getattr(gpu.optim, f.name), f.name
    assert gpu.accelerator == "gpu" and gpu.precision == "bf16-mixed" and gpu.compile
    from gpt.model import non_embedding_params

    assert 20e6 <= non_embedding_params(gpu.model) <= 50e6
    assert gpu.batch_size * gpu.model.seq_len >= 100_000  # tokens per step: keeps an H100 busy


def test_peak_and_mfu():
    assert train.peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert train.peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert train.peak_bf16_flops("NVIDIA H200") == 989e12
    assert train.peak_bf16_flops("Some Future GPU") is None
    assert train.model_flops_utilization(494.5e12, 989e12) == pytest.approx(0.5)
    assert train.model_flops_utilization(1e12, None) is None


@pytest.mark.skipif(not hasattr(torch, "compile"), reason="torch.compile unavailable")
def test_gpu_tiny_trains_compiled_in_bf16_on_cpu(tmp_path):
    result_file = tmp_path / "result.json"
    proc = run_script([str(ROOT / "examples" / "gpt" / "train.py"), "--preset", "gpu-tiny",
                       "--out", str(tmp_path / "runs"), "--json", str(result_file)],
                      cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bf16-mixed, compiled" in proc.stdout
    result = json.loads(result_file.read_text())
    assert result["steps"] == 24 and math.isfinite(result["final_loss"])
    assert result["final_loss"] < math.log(256)  # it learned something
    assert event_files(tmp_path / "runs")
    assert Path(result["summary_file"]).is_file()
