"""The examples: the GPT's accounting and data split, and both examples end to end (smoke).

The end-to-end tests run the scripts as a user would (subprocesses, real Trainer, real
TensorBoard event files) and check what they leave behind.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lightning_scaling.io import find_runs
import torch

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))

from gpt.data import ByteWindows, CorpusError, is_validation, load_split  # noqa: E402
from gpt.model import GPT, GPTConfig, flops_per_token, non_embedding_params  # noqa: E402
from gpt.module import GPTLightningModule, WarmupCosine  # noqa: E402


def run_script(args, cwd, timeout=120):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    return proc


def event_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("events.out.tfevents.*"))


# ---------------------------------------------------------------- model accounting

@pytest.mark.parametrize("shape", [dict(n_layer=2, n_head=2, d_model=32, seq_len=16),
                                   dict(n_layer=3, n_head=4, d_model=64, seq_len=32, mlp_ratio=2)])
def test_non_embedding_params_formula_matches_the_module(shape):
    config = GPTConfig(**shape)
    model = GPT(config)
    assert model.n_params == non_embedding_params(config)
    embeddings = config.vocab_size * config.d_model + config.seq_len * config.d_model
    # tied output layer: no separate vocabulary matrix
    assert sum(p.numel() for p in model.parameters()) == model.n_params + embeddings


def test_flops_per_token_is_the_measured_count_with_the_causal_half_of_attention():
    """torch's FLOP counter, with attention computed by plain matmuls (the math backend).

    Measured = 6·(matrix weights)·tokens + 12·L·T·d·tokens (the full attention square)
    + 6·d·V·tokens (tied output layer). Our count keeps the causal half of attention,
    leaves out the output layer and counts the LayerNorm weights in N.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    config = GPTConfig(n_layer=2, n_head=2, d_model=32, seq_len=16)
    model = GPT(config)
    batch, tokens = 3, 3 * config.seq_len
    idx = torch.randint(0, 256, (batch, config.seq_len))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(idx, idx).backward()
    measured = counter.get_total_flops()
    L, T, d, V = config.n_layer, config.seq_len, config.d_model, config.vocab_size
    layernorm_weights = (2 * L + 1) * d
    expected_measured = (flops_per_token(config) - 6 * layernorm_weights
                         + 6 * L * T * d + 6 * d * V) * tokens
    assert measured == pytest.approx(expected_measured, rel=1e-9)

    module = GPTLightningModule(config, batch_size=batch)
    assert module.flops_per_batch == flops_per_token(config) * tokens
    assert module.tokens_per_batch == tokens
    assert module.n_params == non_embedding_params(config)


def test_bad_config_is_one_clear_error():
    with pytest.raises(ValueError, match="divisible by n_head"):
        GPTConfig(d_model=30, n_head=4)


def test_schedule_warms_up_then_decays():
    s = WarmupCosine(warmup_steps=10, total_steps=110, min_ratio=0.1)
    assert 0 < s(0) < s(5) < s(9) <= 1.0
    assert s(10) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.55)
    assert s(110) == pytest.approx(0.1) and s(500) == pytest.approx(0.1)


def test_injected_fault_multiplies_the_real_schedulers_lr_from_its_step_on(tmp_path, capsys):
    from gpt import train

    result_file = tmp_path / "r.json"
    assert train.main(["--preset", "smoke", "--no-forecast", "--inject-fault", "30", "--out",
                       str(tmp_path), "--json", str(result_file)]) == 0
    assert "injected fault: learning rate x10" in capsys.readouterr().out
    r = json.loads(result_file.read_text())
    peak, s = r["optim"]["lr"], WarmupCosine(r["optim"]["warmup_steps"], 48, r["optim"]["min_lr_ratio"])
    planned = [peak * s(k) for k in range(1, 49)]  # the LR set for update k + 1, after update k
    ratio = np.array(r["lrs"]) / np.array(planned)
    # updates 1..30 (global steps 0..29) ran on plan; from global step 30 on, ten times the LR
    assert np.allclose(ratio[:30], 1.0) and np.allclose(ratio[30:], 10.0)


# ---------------------------------------------------------------- data

def test_split_is_by_file_deterministic_and_disjoint(tmp_path):
    for i in range(40):
        (tmp_path / f"mod_{i}.py").write_text(f"# file {i}\n" + f"x_{i} = {i}\n" * 5)
    (tmp_path / "image.png").write_bytes(b"\x89PNG binary")
    train_a, val_a = load_split(tmp_path, val_fraction=0.2)
    train_b, val_b = load_split(tmp_path, val_fraction=0.2)
    assert np.array_equal(train_a, train_b) and np.array_equal(val_a, val_b)
    train_text, val_text = bytes(train_a).decode(), bytes(val_a).decode()
    val_files = {i for i in range(40) if is_validation(f"mod_{i}.py", 0.2)}
    assert 0 < len(val_files) < 40
    for i in range(40):
        marker = f"# file {i}\n"
        assert (marker in val_text) == (i in val_files)
        assert (marker in train_text) == (i not in val_files)
    assert "PNG" not in train_text + val_text


def test_windows_are_next_byte_pairs_and_validation_covers_the_corpus():
    data = np.arange(1000, dtype=np.uint8)
    windows = ByteWindows(data, seq_len=8)
    x, y = windows[3]
    assert x.tolist() == list(range(24, 32)) and y.tolist() == list(range(25, 33))
    spread = ByteWindows(data, seq_len=8, max_windows=5)
    assert len(spread) == 5 and int(spread.starts[-1]) > 900


def test_missing_corpus_is_one_line_and_exit_status_2(tmp_path, capsys):
    from gpt import train

    assert train.main(["--preset", "smoke", "--data", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such file or folder" in err[0]
    with pytest.raises(CorpusError, match="no text files"):
        load_split(tmp_path)


def test_presets_scale_validation_with_the_run_and_refuse_a_missing_gpu():
    from gpt import train

    cpu = train.PRESETS["cpu"]
    half = train.resolve_preset(train.parse_args(["--preset", "cpu", "--max-steps", str(cpu.max_steps // 2)]))
    assert half.val_every == round(cpu.val_every / 2)
    followed = train.resolve_preset(train.parse_args(["--preset", "cpu", "--monitor", "val_loss"]))
    assert cpu.max_steps // followed.val_every >= 20  # enough validation points to fit
    with pytest.raises(SystemExit):
        train.parse_args(["--inject-fault", "0"])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="needs a CUDA GPU"):
            train.resolve_preset(train.parse_args(["--preset", "gpu"]))


# ---------------------------------------------------------------- end to end (smoke)

def test_train_smoke_end_to_end(tmp_path):
    result_file = tmp_path / "result.json"
    proc = run_script([str(EXAMPLES / "gpt" / "train.py"), "--preset", "smoke", "--out",
                       str(tmp_path / "runs"), "--json", str(result_file)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "forecast made at 50% of the run" in out
    assert f"tensorboard --logdir {tmp_path / 'runs'}" in out
    result = json.loads(result_file.read_text())
    assert result["steps"] == result["planned_steps"] == 48
    assert result["tokens"] == 48 * 16 * 64
    assert math.isfinite(result["final_loss"]) and result["final_loss"] < math.log(256)
    assert event_files(tmp_path / "runs")
    summary = json.loads(Path(result["summary_file"]).read_text())
    assert summary["format"] == "lightning-scaling/run-summary"
    assert summary["n_params"] == result["n_params"]
    assert summary["tokens"] == pytest.approx(result["tokens"])
    assert summary["flops"] == pytest.approx(result["flops"])
    assert summary["forecast"] is not None and summary["forecasts"]
    assert result["forecast_50"] is not None


def test_sweep_smoke_end_to_end(tmp_path):
    out = tmp_path / "sweep"
    proc = run_script([str(EXAMPLES / "sweep.py"), "--smoke", "--out", str(out)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "L(N, D) = E + A / N^alpha + B / D^beta" in proc.stdout
    assert "compute-optimal for C =" in proc.stdout
    result = json.loads((out / "sweep_result.json").read_text())
    assert len(result["runs"]) == 6
    assert len({(r["N"], r["D"]) for r in result["runs"]}) == 6
    assert set(result["law"]["params"]) == {"E", "A", "B", "alpha", "beta"}
    checks = result["forecast_checks"]  # the sweep counts its forecasts' intervals and its warnings
    assert checks["runs"] == 6 and 0 <= checks["held_25"] <= 6 and 0 <= checks["runs_warned"] <= 6
    assert checks["runs_with_reached_loss"] == 6 and "reached nan" not in proc.stdout
    assert "interval holds the reached loss:" in proc.stdout
    summaries = sorted(out.rglob("scaling_summary.json"))
    assert len(summaries) == 6
    assert all(json.loads(p.read_text())["forecast"] is not None for p in summaries)
    runs, problems = find_runs(out)  # the run folders (the panels' series sub-runs are part of each)
    assert len(runs) == 6 and problems == []
    figure = Path(result["figure"])
    assert figure.is_file() and figure.read_bytes()[:4] == b"\x89PNG"
