"""Benchmark (one H100/H200, no network): tokens/s and MFU, TRL defaults vs the uptake recipe.

    python bench/train_gpu.py --out DIR            # on the GPU machine, about 3-5 minutes
    python bench/train_gpu.py --smoke --out DIR    # CPU, tiny config: exercises the same logic

A randomly initialised Llama-style model of about 0.55B parameters (hidden 1536, 20 layers,
12 heads with 4 KV heads, MLP 4096, vocab 32000, tied embeddings) is written once as bf16
safetensors, with a tokenizer trained here (nothing is downloaded). Every arm trains on the same
pre-tokenized random sequences of exactly ``--seq`` tokens (2048), so there is no padding and
every token is a real token; each arm runs in its own process (fresh memory, fresh kernels):

- ``trl_defaults``: ``SFTTrainer(model=<dir>, args=SFTConfig(...))`` with TRL's defaults —
  fp32 master weights, bf16 autocast, gradient checkpointing on, fused AdamW, SDPA, batch 8 —
  plus what the measurement needs (``max_length=seq``, step count, no saving or reporting).
- ``uptake_recipe``: the example recipe's ``gpu`` profile run through uptake's own preflight and
  config builders, with full fine-tuning (``lora: null``) so that both arms do the same work:
  fp32 master weights, bf16 autocast, gradient checkpointing decided by preflight's memory
  estimate (off for this model), fused AdamW, Liger kernels and flash-attn when installed.
- ``uptake_recipe_lora``: the ``gpu`` profile unchanged (LoRA r=16 on all linear layers, bf16
  base weights): the recipe as production runs it.
- ``uptake_recipe_compile`` (only with ``--arms``): ``uptake_recipe`` plus ``torch_compile``.

Throughput is timed after ``--warmup`` steps with CUDA synchronisation, over ``--steps`` steps.
MFU = flops_per_token * tokens/s / peak, with peak the bf16 matmul rate measured here
(8192^3 products) and flops_per_token = 6N for full fine-tuning (N = all parameters), 4N for
LoRA (forward 2N + activation gradients 2N; frozen weights get no weight gradients).
``mfu_attn`` adds the attention score/value FLOPs (12 * layers * hidden * seq per token, PaLM
appendix B). JSON goes to DIR/train_gpu.json (default bench/results/train_gpu.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RECIPE = REPO / "examples" / "legal" / "recipe.yaml"
ARMS = ("trl_defaults", "uptake_recipe", "uptake_recipe_lora")
OPTIONAL_ARMS = ("uptake_recipe_compile",)  # full fine-tuning + torch.compile (compiles ~1 min)
FULL = {"hidden": 1536, "layers": 20, "heads": 12, "kv_heads": 4, "mlp": 4096, "vocab": 32000}
SMOKE = {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "mlp": 128, "vocab": 1000}


# ------------------------------------------------------------------ shared


def _config(shape: dict[str, int], seq: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=shape["hidden"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        intermediate_size=shape["mlp"],
        vocab_size=shape["vocab"],
        max_position_embeddings=max(4096, seq),
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
    )


def build_model(model_dir: Path, shape: dict[str, int], seq: int) -> int:
    """Random-weight model (bf16 safetensors) plus a locally trained tokenizer; returns N."""
    import torch
    from transformers import LlamaForCausalLM

    from uptake.testing.tiny_models import train_tokenizer

    torch.manual_seed(0)
    config = _config(shape, seq)
    config.dtype = torch.bfloat16
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    model.to(torch.bfloat16).save_pretrained(model_dir, safe_serialization=True)
    corpus = [f"memo {i}: the deadline is {i % 90} days under rule {i % 17}." for i in range(2000)]
    tok = train_tokenizer(corpus, 600)
    tok.pad_token = "<|pad|>"
    tok.save_pretrained(model_dir)
    return n_params


def _dataset(rows: int, seq: int, vocab: int):
    import torch
    from datasets import Dataset

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, vocab, (rows, seq), generator=g)  # never the pad id (1)
    return Dataset.from_dict({"input_ids": ids.tolist()})


def peak_matmul_tflops(device: str, smoke: bool) -> dict[str, Any]:
    """Measured dense bf16 matmul rate: the denominator of MFU."""
    import torch

    n = 512 if smoke else 8192
    dtype = torch.bfloat16
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    iters = 3 if smoke else 20
    for _ in range(3):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"n": n, "iters": iters, "tflops": 2 * n**3 * iters / seconds / 1e12}


# ------------------------------------------------------------------ child: one arm


class _Timer:
    """Times steps warmup+1 .. end with device synchronisation; counts their tokens."""

    def __new__(cls, warmup: int, device: str):
        from transformers import TrainerCallback

        class Timer(TrainerCallback):
            def __init__(self) -> None:
                self.t0 = self.t1 = None
                self.tokens0 = self.tokens1 = 0
                self.steps = 0

            def _sync(self) -> None:
                if device == "cuda":
                    import torch

                    torch.cuda.synchronize()

            def on_step_begin(self, args, state, control, **kwargs):
                if state.global_step == warmup and self.t0 is None:
                    self._sync()
                    self.t0 = time.perf_counter()
                    self.tokens0 = state.num_input_tokens_seen
                    self.step0 = state.global_step

            def on_train_end(self, args, state, control, **kwargs):
                self._sync()
                self.t1 = time.perf_counter()
                self.tokens1 = state.num_input_tokens_seen
                self.steps = state.global_step - self.step0

        return Timer()


def run_arm(arm: str, spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    import yaml
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    device = spec["device"]
    model_dir = Path(spec["model_dir"])
    steps, warmup, batch, seq = spec["steps"], spec["warmup"], spec["batch"], spec["seq"]
    data = _dataset((steps + warmup) * batch, seq, spec["vocab"])
    out = Path(spec["tmp"]) / arm
    timer = _Timer(warmup, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if arm not in ARMS + OPTIONAL_ARMS:
        raise SystemExit(f"unknown arm {arm!r}; choose from {ARMS + OPTIONAL_ARMS}")

    if arm == "trl_defaults":
        args = SFTConfig(
            output_dir=str(out),
            max_steps=steps + warmup,
            max_length=seq,
            per_device_train_batch_size=batch,
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
            logging_steps=10_000,
            include_num_input_tokens_seen="non_padding",
            use_cpu=device == "cpu",
        )
        trainer = SFTTrainer(
            model=str(model_dir),
            args=args,
            train_dataset=data,
            processing_class=AutoTokenizer.from_pretrained(model_dir),
            callbacks=[timer],
        )
        settings = {"lora": False, "attn_implementation": trainer.model.config._attn_implementation}
    else:
        from pipeline.train import parse_recipe
        from pipeline.train.config import lora_config, sft_config
        from pipeline.train.preflight import adapt_model, load_model, run_preflight

        raw = yaml.safe_load(RECIPE.read_text())
        raw["max_length"] = seq
        gpu = raw.setdefault("profiles", {}).setdefault("gpu", {}) or {}
        raw["profiles"]["gpu"] = gpu
        if arm in ("uptake_recipe", "uptake_recipe_compile"):
            gpu["lora"] = None
        if arm == "uptake_recipe_compile":
            gpu.setdefault("hardware", {})["torch_compile"] = True
        recipe = parse_recipe(yaml.safe_dump(raw), source=RECIPE).resolve("gpu")
        prepared = run_preflight(model_dir, recipe)
        prepared.report.raise_if_refused()
        hw = prepared.hardware
        lora = recipe.lora is not None
        dtype = torch.bfloat16 if (lora and hw.bf16) else torch.float32
        model = load_model(prepared, dtype=dtype)
        added = adapt_model(model, prepared, recipe.seed)
        args = sft_config(recipe, prepared.report, hw, out)
        # Pre-tokenized data has no chat turns to mask; the mask does not change the work done.
        args.assistant_only_loss = False
        args.max_steps = steps + warmup
        args.per_device_train_batch_size = batch
        args.gradient_accumulation_steps = 1
        args.save_strategy = "no"
        args.logging_steps = 10_000
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=data,
            processing_class=prepared.tokenizer,
            peft_config=lora_config(recipe, added),
            callbacks=[timer],
        )
        settings = {
            "lora": lora,
            "attn_implementation": prepared.report.attn_implementation,
            "preflight_notes": prepared.report.notes,
        }

    trainer.train()
    seconds = timer.t1 - timer.t0
    tokens = int(timer.tokens1 - timer.tokens0)
    settings.update(
        batch=batch,
        seq=seq,
        gradient_checkpointing=bool(trainer.args.gradient_checkpointing),
        bf16=bool(trainer.args.bf16),
        optim=str(getattr(trainer.args.optim, "value", trainer.args.optim)),
        torch_compile=bool(trainer.args.torch_compile),
        liger=bool(trainer.args.use_liger_kernel),
        packing=bool(getattr(trainer.args, "packing", False)),
        master_weights=str(next(p for p in trainer.model.parameters() if p.requires_grad).dtype),
    )
    result = {
        "arm": arm,
        "timed_steps": timer.steps,
        "timed_tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "settings": settings,
    }
    if device == "cuda":
        result["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        result["max_memory_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    return result


# ------------------------------------------------------------------ parent


def _spawn(arm: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    spec_file = Path(spec["tmp"]) / f"{arm}.spec.json"
    result_file = Path(spec["tmp"]) / f"{arm}.result.json"
    spec_file.write_text(json.dumps(spec))
    cmd = [
        sys.executable,
        __file__,
        "--child",
        arm,
        "--spec",
        str(spec_file),
        "--result",
        str(result_file),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"arm": arm, "error": f"timed out after {timeout:.0f}s"}
    if proc.returncode != 0 or not result_file.is_file():
        return {"arm": arm, "error": (proc.stderr or proc.stdout)[-4000:]}
    return json.loads(result_file.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="directory for train_gpu.json")
    parser.add_argument("--smoke", action="store_true", help="tiny config on CPU (logic check)")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--steps", type=int, default=None, help="timed steps per arm")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--seq", type=int, default=None)
    parser.add_argument(
        "--budget-s", type=float, default=450.0, help="stop starting arms after this"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.spec.read_text())
        args.result.write_text(json.dumps(run_arm(args.child, spec)))
        return 0

    import torch

    started = time.perf_counter()
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device; use --smoke for the CPU logic check")
    shape = SMOKE if args.smoke else FULL
    steps = args.steps or (2 if args.smoke else 20)
    warmup = args.warmup or (1 if args.smoke else 5)
    batch = args.batch or (2 if args.smoke else 8)
    seq = args.seq or (128 if args.smoke else 2048)
    out_dir = args.out or REPO / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out_file = out_dir / "train_gpu.json"

    card = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu"
    peak = peak_matmul_tflops(device, args.smoke)
    print(f"{card}: measured bf16 matmul peak {peak['tflops']:.1f} TFLOP/s", flush=True)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-train-gpu-") as tmp:
        model_dir = Path(tmp) / "model"
        t = time.perf_counter()
        n_params = build_model(model_dir, shape, seq)
        print(
            f"model: {n_params / 1e6:.1f}M parameters, built in {time.perf_counter() - t:.0f}s",
            flush=True,
        )
        spec = {
            "device": device,
            "model_dir": str(model_dir),
            "steps": steps,
            "warmup": warmup,
            "batch": batch,
            "seq": seq,
            "vocab": shape["vocab"],
            "tmp": tmp,
        }
        for arm in args.arms.split(","):
            left = args.budget_s - (time.perf_counter() - started)
            if left < 30:
                results.append({"arm": arm, "error": "skipped: time budget spent"})
                continue
            run = _spawn(arm, spec, timeout=left)
            if "error" not in run:
                lora = run["settings"]["lora"]
                per_token = (4 if lora else 6) * n_params
                attn = 12 * shape["layers"] * shape["hidden"] * seq
                run["flops_per_token"] = per_token
                run["mfu"] = per_token * run["tokens_per_s"] / (peak["tflops"] * 1e12)
                run["mfu_attn"] = (per_token + attn) * run["tokens_per_s"] / (peak["tflops"] * 1e12)
                print(
                    f"{arm:20s} {run['tokens_per_s']:10.0f} tok/s  MFU {run['mfu'] * 100:5.1f}%  "
                    f"(with attention {run['mfu_attn'] * 100:5.1f}%)",
                    flush=True,
                )
            else:
                print(f"{arm:20s} FAILED: {run['error'][-500:]}", flush=True)
            results.append(run)

    by_arm = {r["arm"]: r for r in results}
    ok = {k: v for k, v in by_arm.items() if "error" not in v}
    base = ok.get("trl_defaults")
    for run in ok.values():
        if base is not None:
            run["speedup_vs_defaults"] = run["tokens_per_s"] / base["tokens_per_s"]
    report = {
        "benchmark": "train_gpu",
        "smoke": args.smoke,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "card": card,
        "peak_bf16_matmul": peak,
        "model": {**shape, "params": n_params, "seq": seq, "batch": batch},
        "steps": {"warmup": warmup, "timed": steps},
        "versions": _versions(),
        "wall_s": time.perf_counter() - started,
        "arms": by_arm,
    }
    out_file.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out_file} in {report['wall_s']:.0f}s", flush=True)
    return 0 if len(ok) == len(results) else 1


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in (
        "torch",
        "transformers",
        "trl",
        "peft",
        "accelerate",
        "datasets",
        "liger-kernel",
        "flash-attn",
    ):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    out["python"] = platform.python_version()
    out["cuda"] = os.environ.get("CUDA_VERSION", "")
    return out


if __name__ == "__main__":
    sys.exit(main())
