"""Model-size sweep: train several GPT sizes at several token budgets, fit L(N, D).

    python examples/sweep.py                 # CPU: 3 sizes x 3 token budgets, under 10 minutes
    python examples/sweep.py --preset gpu    # 4 sizes (3M-42M parameters) x 3 budgets on one GPU
    python examples/sweep.py --smoke         # seconds, for CI

Every run is a full training of its own (its own warm-up and cosine decay to its own token
budget) with ``ScalingLawMonitor`` writing ``scaling_summary.json`` into the run's log folder.
The sweep then reads those summaries (N = non-embedding parameters, D = tokens, loss = the
final training loss the monitor recorded, nats per byte), fits Chinchilla's law
L(N, D) = E + A/N^alpha + B/D^beta with ``lightning_scaling.fit_scaling_law`` and bootstrap
intervals, prints the compute-optimal size for a FLOP budget, and saves the IsoFLOP/frontier
figure. Runs already in a summary-holding log folder are not needed: everything comes from
the files this invocation writes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpt import train as gpt_train  # noqa: E402
from gpt.model import GPTConfig, non_embedding_params  # noqa: E402


@dataclass(frozen=True)
class SweepPlan:
    """Which runs a sweep makes.

    Attributes:
        preset: the train.py preset each run starts from (device, precision, batch, LR).
        sizes: (n_layer, d_model, n_head) of each model size.
        token_budgets: training tokens of each run (rounded to whole optimizer steps).
        batch_size: sequences per step (None: the preset's). Small models learn far more
            per token from small batches; the CPU sweep uses 16 to get past the early
            plateau of byte-level training within its budgets.
        bootstrap: bootstrap refits for the law's intervals.
    """

    preset: str
    sizes: tuple[tuple[int, int, int], ...]
    token_budgets: tuple[float, ...]
    batch_size: int | None = None
    bootstrap: int = 200


PLANS = {
    # 0.05M, 0.10M and 0.22M non-embedding parameters; 1M-4M tokens each (488-1953 steps
    # of 2,048 tokens), past the early plateau of byte-level training.
    "cpu": SweepPlan("cpu", sizes=((1, 64, 2), (2, 64, 2), (2, 96, 3)),
                     token_budgets=(1e6, 2e6, 4e6), batch_size=16),
    # 3.2M, 10.6M, 25M and 42.5M; 50M-200M tokens each (about 15 minutes on one H100).
    "gpu": SweepPlan("gpu", sizes=((4, 256, 4), (6, 384, 6), (8, 512, 8), (6, 768, 12)),
                     token_budgets=(50e6, 100e6, 200e6)),
    # CI: two tiny sizes, three budgets of a few dozen steps.
    "smoke": SweepPlan("smoke", sizes=((1, 32, 2), (2, 64, 2)),
                       token_budgets=(16 * 1024, 24 * 1024, 36 * 1024), bootstrap=50),
}


def run_args(plan: SweepPlan, size, tokens: float, out: str, seed: int) -> list[str]:
    """train.py arguments of one run of the sweep."""
    n_layer, d_model, n_head = size
    preset = gpt_train.PRESETS[plan.preset]
    batch_size = plan.batch_size or preset.batch_size
    tokens_per_step = batch_size * preset.model.seq_len
    steps = max(8, round(tokens / tokens_per_step))
    n = non_embedding_params(GPTConfig(n_layer=n_layer, d_model=d_model, n_head=n_head,
                                       seq_len=preset.model.seq_len))
    warmup = max(2, min(preset.optim.warmup_steps, steps // 10))
    return ["--preset", plan.preset, "--n-layer", str(n_layer), "--d-model", str(d_model),
            "--n-head", str(n_head), "--batch-size", str(batch_size),
            "--max-steps", str(steps), "--warmup-steps", str(warmup),
            "--out", out, "--name", f"N{n / 1e3:.0f}k_D{steps * tokens_per_step / 1e3:.0f}k",
            "--seed", str(seed), "--report-every", str(max(1, steps // 4))]


def read_points(summary_files: list[str]) -> tuple[list[float], list[float], list[float], list[str]]:
    """(N, D, final loss, run names) from the monitor's run summaries."""
    from lightning_scaling.io import read_summary

    N, D, loss, names = [], [], [], []
    for path in summary_files:
        s = read_summary(path)
        if s.get("n_params") and s.get("tokens") and s.get("final_loss") is not None:
            N.append(float(s["n_params"]))
            D.append(float(s["tokens"]))
            loss.append(float(s["final_loss"]))
            names.append(str(s.get("run") or Path(path).parent.name))
        else:
            print(f"skipped {path}: no N, D or final loss in it", flush=True)
    return N, D, loss, names


def check_runs(results: list[dict]) -> dict:
    """Print, per run, the forecasts made at 25% and 50% against the loss it reached, and the
    monitor's warnings (from its run summary); return the counts."""
    from lightning_scaling.io import read_summary

    held = {"forecast_25": 0, "forecast_50": 0}
    warned = compared = 0
    print("\nforecasts vs the final loss each run reached (90% intervals), and the monitor's warnings:")
    for r in results:
        reached = r.get("reached_loss")
        compared += reached is not None
        cells = []
        for key in held:
            f = r.get(key)
            if f is None or reached is None:
                cells.append(f"{'-':>26s}")
                continue
            inside = f["lower"] <= reached <= f["upper"]
            held[key] += inside
            cells.append(f"{f['final_loss']:.3f} [{f['lower']:.3f}, {f['upper']:.3f}] {'in ' if inside else 'out'}")
        path = r.get("summary_file")
        warnings = read_summary(path).get("warnings", []) if path and Path(path).is_file() else []
        warned += bool(warnings)
        name = Path(r.get("log_dir") or "?").parent.name
        print(f"  {name:<16} reached {reached if reached is not None else float('nan'):.3f}  25%: {cells[0]}  "
              f"50%: {cells[1]}  warnings: {len(warnings)}")
        for w in warnings:
            print(f"      {w}")
    n = len(results)
    print(f"interval holds the reached loss: {held['forecast_25']}/{n} at 25%, {held['forecast_50']}/{n} at 50%; "
          f"runs with a warning: {warned}/{n}", flush=True)
    return {"held_25": held["forecast_25"], "held_50": held["forecast_50"], "runs_warned": warned, "runs": n,
            "runs_with_reached_loss": compared}


def print_law(fit, budget: float, level: float = 0.9) -> dict:
    """Print the law with intervals and the compute-optimal allocation; return them as a dict."""
    p = fit.params
    intervals = fit.param_intervals(level) if fit.bootstrap_params is not None else {}

    def with_interval(name, fmt):
        text = format(p[name], fmt)
        if name in intervals:
            lo, hi = intervals[name]
            text += f" [{format(lo, fmt)}, {format(hi, fmt)}]"
        return text

    print(f"\nL(N, D) = E + A / N^alpha + B / D^beta   (nats per byte; {level:.0%} bootstrap intervals)")
    print(f"  E     = {with_interval('E', '.4f')}   (irreducible loss, nats/byte)")
    print(f"  A     = {with_interval('A', '.4g')}")
    print(f"  alpha = {with_interval('alpha', '.3f')}   (N: non-embedding parameters)")
    print(f"  B     = {with_interval('B', '.4g')}")
    print(f"  beta  = {with_interval('beta', '.3f')}   (D: training tokens = bytes)")
    for flag in fit.diagnostics.get("flags", []):
        print(f"  note: {flag}")
    n_opt, d_opt = fit.compute_optimal(budget)
    line = (f"\ncompute-optimal for C = {budget:.3g} FLOPs (C = 6 N D): "
            f"N = {n_opt / 1e6:.3g}M parameters, D = {d_opt / 1e6:.3g}M tokens "
            f"({d_opt / n_opt:.1f} tokens per parameter), predicted loss "
            f"{fit.predict(n_opt, d_opt):.4f} nats/byte")
    result = {"params": dict(p), "param_intervals": intervals, "budget_flops": budget,
              "N_opt": n_opt, "D_opt": d_opt, "loss_opt": fit.predict(n_opt, d_opt)}
    if fit.bootstrap_params is not None:
        ci = fit.compute_optimal_intervals(budget, level)
        if all(math.isfinite(v) for pair in ci.values() for v in pair):
            line += (f"\n  {level:.0%} intervals: N {ci['N'][0] / 1e6:.3g}M-{ci['N'][1] / 1e6:.3g}M, "
                     f"D {ci['D'][0] / 1e6:.3g}M-{ci['D'][1] / 1e6:.3g}M, "
                     f"loss {ci['loss'][0]:.4f}-{ci['loss'][1]:.4f}")
        else:
            line += "\n  intervals: not available (some bootstrap laws have no finite optimum)"
        result["optimal_intervals"] = ci
    print(line, flush=True)
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=("cpu", "gpu"), default=None,
                        help="run sizes (default: gpu when CUDA is available, else cpu)")
    parser.add_argument("--smoke", action="store_true", help="tiny runs for CI")
    parser.add_argument("--out", default="runs/sweep", help="log folder of the runs")
    parser.add_argument("--budget", type=float, default=None,
                        help="FLOP budget for the compute-optimal size (default: 10x the "
                             "largest run's 6ND)")
    parser.add_argument("--plot", default=None, help="frontier figure (default: OUT/frontier.png)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    plan = PLANS["smoke" if args.smoke else (args.preset or gpt_train.default_preset_name())]
    runs = [(size, tokens) for size in plan.sizes for tokens in plan.token_budgets]
    print(f"sweep '{plan.preset}': {len(plan.sizes)} sizes x {len(plan.token_budgets)} token "
          f"budgets = {len(runs)} runs into {args.out}", flush=True)
    summaries, results = [], []
    for i, (size, tokens) in enumerate(runs, 1):
        run_argv = run_args(plan, size, tokens, args.out, args.seed)
        print(f"\n[{i}/{len(runs)}] python examples/gpt/train.py {' '.join(run_argv)}", flush=True)
        result = gpt_train.train(gpt_train.parse_args(run_argv))
        results.append(result)
        if Path(result["summary_file"]).is_file():
            summaries.append(result["summary_file"])
        else:
            print(f"no run summary at {result['summary_file']} (is the monitor installed?)")

    from lightning_scaling import InvalidInputError, fit_scaling_law

    checks = check_runs(results)
    N, D, loss, names = read_points(summaries)
    print("\nruns (from their scaling_summary.json):")
    for n, d, l_, name in zip(N, D, loss, names):
        print(f"  {name:<22} N = {n / 1e6:6.3f}M  D = {d / 1e6:7.3f}M tokens  "
              f"final loss {l_:.4f} nats/byte")
    try:
        fit = fit_scaling_law(N, D, loss, bootstrap=plan.bootstrap, seed=args.seed)
    except InvalidInputError as exc:
        print(f"error: cannot fit L(N, D) to these runs: {exc}", file=sys.stderr)
        return 2
    except (ArithmeticError, ValueError) as exc:  # a numerical failure inside the bootstrap
        print(f"note: the bootstrap failed ({type(exc).__name__}: {exc}); the law is shown "
              "without intervals", flush=True)
        fit = fit_scaling_law(N, D, loss, bootstrap=0)
    budget = args.budget or 10 * max(6 * n * d for n, d in zip(N, D))
    law = print_law(fit, budget)

    plot = Path(args.plot or Path(args.out) / "frontier.png")
    try:
        from lightning_scaling.cli.plots_scaling import plot_scaling_law

        plot.parent.mkdir(parents=True, exist_ok=True)
        plot_scaling_law(fit, N, D, loss, str(plot), budgets=[budget])
        print(f"frontier figure: {plot}")
    except ImportError as exc:
        print(f"no figure: matplotlib is missing ({exc}); pip install matplotlib")
        plot = None
    out = Path(args.out) / "sweep_result.json"
    out.write_text(json.dumps({"runs": [{"name": nm, "N": n, "D": d, "loss": l_}
                                        for nm, n, d, l_ in zip(names, N, D, loss)],
                               "forecast_checks": checks,
                               "law": _plain(law), "fit": fit.to_dict(),
                               "figure": None if plot is None else str(plot)}, indent=1))
    print(f"law and runs: {out}")
    print(f"TensorBoard: tensorboard --logdir {args.out}")
    print(f"sweep took {time.perf_counter() - started:.0f} s")
    return 0


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


if __name__ == "__main__":
    sys.exit(main())
