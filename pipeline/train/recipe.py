"""The training recipe: one YAML file, validated by pydantic, applied unchanged to any base model.

A recipe names its stages (an optional ``sft``, then optional ``dpo``, then the RL stages ``grpo``
and ``sdpo`` in the order the file gives them; at least one stage), the adapter (LoRA or full
fine-tuning), sequence length, seed, data paths and hardware settings. ``profiles`` holds partial
overrides per hardware kind (``cpu``, ``gpu``); the one matching the machine is merged over the
base recipe at run time, so a single file serves the CI box and the GPU worker. Data paths are
relative to the recipe file, which makes a recipe directory self-contained and movable.

Every error names the field it is about (``stages.sft.learning_rate: ...``) and is an
``InputError``: the CLI prints one line and exits 2.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any, Literal, cast

import yaml
from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from uptake.config_model import ConfigModel
from uptake.errors import InputError, describe_validation_error

ProfileName = Literal["cpu", "gpu"]
PROFILES: tuple[str, ...] = ("cpu", "gpu")


class RecipeError(InputError):
    """The recipe file is missing, unparsable or invalid (exit code 2)."""


class _Section(ConfigModel):
    """Strict, read-only section (uptake.config_model): an unknown key is a typo."""


def _resolve_data_path(value: Any, info: ValidationInfo) -> Path:
    """Data paths are relative to the recipe file and must exist when the recipe is loaded."""
    if not isinstance(value, str | Path):
        raise ValueError(f"must be a path (text), got {type(value).__name__}")
    try:
        path = Path(value).expanduser()
    except RuntimeError as exc:  # "~nobody/x": no such user's home
        raise ValueError(f"cannot expand {value!r}: {exc}") from None
    if not path.is_absolute():
        path = Path((info.context or {}).get("base_dir") or Path.cwd()) / path
    if not path.is_file():
        raise ValueError(f"data file not found: {path}")
    return path.resolve()


class LoRA(_Section):
    """Low-rank adapters on every linear layer by default; merged into the base at the end."""

    r: int = Field(16, ge=1, le=1024, description="Rank of the adapters.")
    alpha: int = Field(32, ge=1, description="Scaling numerator (the update is scaled alpha/r).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the adapters' input.")
    target_modules: Literal["all-linear"] | list[str] = Field(
        "all-linear", min_length=1, description="`all-linear`, or the module names to adapt."
    )


class _StageCommon(_Section):
    data: Path = Field(
        description="Data JSONL (chats for SFT, preference pairs for DPO, rubric tasks in the "
        "suite format for GRPO/SDPO), relative to the recipe."
    )
    epochs: float = Field(1.0, gt=0, description="Passes over the data (unless `max_steps`).")
    max_steps: int | None = Field(
        None, ge=1, description="Optimizer steps to train, over `epochs`; null: `epochs` decide."
    )
    learning_rate: float = Field(2e-4, gt=0, le=1.0, description="Peak learning rate.")
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = Field(
        "cosine", description="Learning-rate schedule after warm-up."
    )
    warmup_ratio: float = Field(
        0.03, ge=0.0, lt=1.0, description="Share of the steps spent warming up."
    )
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    batch_size: int = Field(8, ge=1, description="Sequences per device and step.")
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="Batches per optimizer step (effective batch: batch_size x this)."
    )
    logging_steps: int = Field(1, ge=1, description="Steps between logged metrics.")
    save_steps: int = Field(100, ge=1, description="Steps between checkpoints (resume points).")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept.")

    _data_path = field_validator("data", mode="before")(_resolve_data_path)


class SFTStage(_StageCommon):
    """Supervised fine-tuning on chat JSONL (``{"messages": [...]}`` per line)."""

    assistant_only_loss: bool = Field(
        True, description="Loss on assistant turns (and their end-of-turn token) only."
    )
    packing: Literal["auto"] | bool = Field(
        "auto", description="Pack sequences; `auto`: only with a padding-free attention kernel."
    )
    length_grouping: bool = Field(
        True, description="When not packing, batch examples of similar length (less padding)."
    )


class DPOStage(_StageCommon):
    """Direct preference optimisation on ``{"prompt": [...], "chosen": ..., "rejected": ...}``."""

    learning_rate: float = Field(5e-6, gt=0, le=1.0, description="Peak learning rate.")
    beta: float = Field(
        0.1, gt=0, description="Strength of the pull towards the reference model (higher: closer)."
    )
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust", "apo_zero", "apo_down"] = Field(
        "sigmoid", description="TRL's DPO loss."
    )


class Reward(_Section):
    """The rubric as the reward: graded by the evaluation's own checks and judge."""

    all_pass_bonus: float = Field(
        0.2,
        ge=0.0,
        le=10.0,
        description="Added when every criterion passes (over the weighted fraction passed, 0..1);"
        " 0: none. All-pass alone is too sparse: a group of equal rewards gives no gradient.",
    )
    judge_concurrency: int = Field(
        4, ge=1, le=256, description="Judge requests in flight at once while grading a step."
    )


class GRPOStage(_StageCommon):
    """Group-relative policy optimisation on rubric tasks (suite format, no answers): each
    prompt is answered ``num_generations`` times and the rubric's grade is the reward."""

    learning_rate: float = Field(2e-4, gt=0, le=1.0, description="Peak learning rate.")
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = Field(
        "constant", description="Learning-rate schedule after warm-up."
    )
    warmup_ratio: float = Field(
        0.0, ge=0.0, lt=1.0, description="Share of the steps spent warming up."
    )
    batch_size: int = Field(
        2, ge=1, description="Prompts per device and step (each answered `num_generations` times)."
    )
    save_steps: int = Field(25, ge=1, description="Steps between checkpoints (resume points).")
    num_generations: int = Field(
        8,
        ge=2,
        le=256,
        description="Answers sampled per prompt (the group rewards are compared in).",
    )
    max_new_tokens: int = Field(
        256, ge=1, le=131_072, description="Longest sampled answer, in tokens."
    )
    temperature: float = Field(
        1.0, gt=0, le=5.0, description="Sampling temperature of the rollouts."
    )
    beta: float = Field(
        0.0,
        ge=0.0,
        description="KL penalty towards the starting model; 0: none (no reference model kept).",
    )
    use_vllm: Literal["auto"] | bool = Field(
        "auto",
        description="Generate rollouts with vLLM (colocate mode); `auto`: on a GPU when vLLM is "
        "installed, else `model.generate()`.",
    )
    reward: Reward = Field(Reward(), description="How the rubric becomes the reward.")


DEFAULT_FEEDBACK_TEMPLATE = (
    "\n\nYour earlier answer failed these criteria of the rubric:\n{feedback_raw}\n"
)


class SDPOStage(GRPOStage):
    """Self-distillation policy optimisation: GRPO plus distillation from the model itself,
    shown the rollout's failed criteria (or a successful answer of its group) as feedback."""

    distillation_weight: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Share of the distillation loss (the rest is GRPO's); 0: plain GRPO. Half by"
        " default: pure SDPO is reported to collapse late in training.",
    )
    teacher: Literal["ema", "base", "live"] = Field(
        "ema",
        description="The teacher: `ema` a moving average of the student, `base` the starting "
        "model, `live` the student itself.",
    )
    feedback_template: str = Field(
        DEFAULT_FEEDBACK_TEMPLATE,
        description="How the feedback is shown to the teacher; `{feedback_raw}` is the list of "
        "failed criteria (with the judge's reasons).",
    )

    @field_validator("feedback_template")
    @classmethod
    def _has_placeholder(cls, value: str) -> str:
        if "{feedback_raw}" not in value:
            raise ValueError("must contain {feedback_raw}")
        return value


RL_STAGES: tuple[str, ...] = ("grpo", "sdpo")
STAGE_NAMES: tuple[str, ...] = ("sft", "dpo", *RL_STAGES)


class Stages(_Section):
    """The training stages: ``sft``, then ``dpo``, then ``grpo``/``sdpo`` in the file's order."""

    sft: SFTStage | None = Field(
        None, description="Supervised fine-tuning; null: none (an RL-only recipe)."
    )
    dpo: DPOStage | None = Field(
        None, description="Preference optimisation on the SFT model; null: none."
    )
    grpo: GRPOStage | None = Field(
        None, description="GRPO on rubric tasks, rewarded by the rubric; null: none."
    )
    sdpo: SDPOStage | None = Field(
        None, description="SDPO on rubric tasks (experimental in TRL); null: none."
    )

    _rl_order: tuple[str, ...] = PrivateAttr(RL_STAGES)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_rl_order(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Stages:
        stages = cast(Stages, handler(data))
        if isinstance(data, dict):
            given = [k for k in data if k in RL_STAGES and data[k] is not None]
            stages._rl_order = tuple(given) + tuple(k for k in RL_STAGES if k not in given)
        elif isinstance(data, Stages):
            stages._rl_order = data._rl_order
        return stages

    @model_validator(mode="after")
    def _at_least_one(self) -> Stages:
        if not self.names():
            raise ValueError(f"needs at least one stage (one of {', '.join(STAGE_NAMES)})")
        if self.dpo is not None and self.sft is None:
            raise ValueError("dpo needs an sft stage before it")
        return self

    def names(self) -> list[str]:
        """The stages the recipe has, in the order they run."""
        order = ["sft", "dpo", *self._rl_order]
        return [name for name in order if getattr(self, name) is not None]


class Hardware(_Section):
    """How to use the machine; ``auto`` picks the fast option the machine supports."""

    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="`auto`: bf16 on GPUs that support it, else fp32."
    )
    gradient_checkpointing: Literal["auto"] | bool = Field(
        "auto", description="`auto`: on only when the activations would not fit on the GPU."
    )
    optimizer: Literal["auto", "adamw_torch", "adamw_torch_fused"] = Field(
        "auto", description="`auto`: `adamw_torch_fused`."
    )
    liger: Literal["auto"] | bool = Field(
        "auto", description="Liger kernels; `auto`: on a GPU when liger-kernel is installed."
    )
    attn_implementation: Literal[
        "auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3"
    ] = Field("auto", description="`auto`: flash_attention_2 when installed, else sdpa.")
    num_processes: int = Field(
        1, ge=1, description="Processes (GPUs); > 1: run under accelerate launch (FSDP)."
    )
    dataloader_num_workers: int = Field(0, ge=0, description="Data loader worker processes.")
    torch_compile: bool = Field(False, description="Compile the model with torch.compile.")


class Recipe(_Section):
    """A validated recipe. ``sha256`` is the hash of the file's bytes, recorded with every run."""

    name: str = Field(min_length=1, description="Name of the recipe, recorded with every run.")
    description: str = Field("", description="Free text for people.")
    seed: int = Field(42, description="Seed of training, data order and resized embeddings.")
    max_length: int = Field(2048, ge=16, description="Tokens per training sequence.")
    max_length_policy: Literal["refuse", "clamp"] = Field(
        "refuse", description="When the model's context is shorter: refuse it, or clamp to it."
    )
    lora: LoRA | None = Field(LoRA(), description="LoRA adapters; null: full fine-tuning.")
    stages: Stages = Field(description="The training stages.")
    hardware: Hardware = Field(Hardware(), description="How to use the machine.")
    profiles: dict[ProfileName, dict[str, Any]] = Field(
        default_factory=dict,
        description="Partial recipes per machine kind (`cpu`, `gpu`), merged over this one.",
    )
    profile: ProfileName | None = Field(
        None, description="Set at run time to the merged profile; not written in the file."
    )

    _sha256: str = PrivateAttr("")
    _source: Path | None = PrivateAttr(None)
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @field_validator("profiles")
    @classmethod
    def _profiles_are_partial_recipes(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name, override in value.items():
            if not isinstance(override, dict):
                raise ValueError(f"profile {name!r} must be a mapping of recipe fields")
            for forbidden in ("profiles", "profile", "name"):
                if forbidden in override:
                    raise ValueError(f"profile {name!r} cannot set {forbidden!r}")
        return value

    @property
    def sha256(self) -> str:
        return self._sha256

    @property
    def source(self) -> Path | None:
        return self._source

    def resolve(self, profile: str | None = None) -> Recipe:
        """The recipe with ``profile`` (default: detected from the machine) merged in; any
        text is accepted and checked here, so a CLI flag or a job spec passes it as it is."""
        if self.profile is not None:
            return self
        profile = profile or detect_profile()
        if profile not in PROFILES:
            raise RecipeError(f"unknown hardware profile {profile!r} (expected one of {PROFILES})")
        merged = _deep_merge(self._raw, self.profiles.get(cast(ProfileName, profile), {}))
        merged["profile"] = profile
        merged.pop("profiles", None)
        resolved = _validate(merged, self._source, prefix=f"profiles.{profile}")
        resolved._sha256, resolved._source, resolved._raw = self._sha256, self._source, merged
        return resolved

    def flat_params(self) -> dict[str, str]:
        """Flat ``recipe.section.key -> str`` mapping for MLflow params."""
        out: dict[str, str] = {}

        def walk(prefix: str, node: Any) -> None:
            if isinstance(node, dict):
                for key, val in node.items():
                    walk(f"{prefix}.{key}", val)
            else:
                out[prefix] = str(node)

        walk("recipe", self.model_dump(mode="json", exclude={"profiles"}))
        return out


def halved_batch(recipe: Recipe) -> tuple[Recipe, str]:
    """The recipe with every stage's per-device batch halved and accumulation doubled (the
    same effective batch), and a note of the change for the run's tag."""
    stages = recipe.stages
    updates: dict[str, Any] = {}
    notes = []
    for name in stages.names():
        stage = getattr(stages, name)
        batch = max(1, stage.batch_size // 2)
        accum = stage.gradient_accumulation_steps * (stage.batch_size // batch)
        updates[name] = stage.model_copy(
            update={"batch_size": batch, "gradient_accumulation_steps": accum}
        )
        notes.append(
            f"{name}: batch {stage.batch_size}x{stage.gradient_accumulation_steps} -> "
            f"{batch}x{accum}"
        )
    return recipe.model_copy(update={"stages": stages.model_copy(update=updates)}), "; ".join(notes)


def detect_profile() -> ProfileName:
    """``gpu`` when CUDA is usable, else ``cpu``."""
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, val in override.items():
        if isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], val)
        else:
            out[key] = copy.deepcopy(val)
    return out


def _validate(data: dict[str, Any], source: Path | None, prefix: str = "") -> Recipe:
    where = f" {source}" if source else ""
    context = {"base_dir": source.parent if source is not None else None}
    try:
        return Recipe.model_validate(data, context=context)
    except ValidationError as exc:
        raise RecipeError(
            f"invalid recipe{where}: {describe_validation_error(exc, prefix)}"
        ) from None


def parse_recipe(text: str, source: Path | None = None) -> Recipe:
    """Validate recipe YAML text; ``source`` anchors relative data paths."""
    where = f" {source}" if source else ""
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise RecipeError(f"invalid recipe{where}: YAML nested too deeply") from None
    except ValueError as exc:  # e.g. an integer over Python's digit limit
        raise RecipeError(f"invalid recipe{where}: {str(exc)[:200]}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"invalid recipe{where}{line}: YAML syntax error: {problem}") from None
    if not isinstance(data, dict):
        got = "empty file" if data is None else type(data).__name__
        raise RecipeError(f"invalid recipe{where}: top level must be a mapping, got {got}")
    if data.get("profile") is not None:
        raise RecipeError(f"invalid recipe{where}: profile: set at run time, not in the file")
    recipe = _validate(data, source)
    recipe._sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
    recipe._source = source
    recipe._raw = data
    for name in recipe.profiles:  # a bad override fails at load time, not hours later on a GPU
        recipe.resolve(name)
    return recipe


def load_recipe(path: str | Path, origin: Path | None = None) -> Recipe:
    """Read and validate a recipe file. Raises RecipeError (exit 2) naming the bad field.
    ``origin``: the file a copy was taken from, whose folder anchors relative data paths (a
    job's snapshot of its track's recipe); by default the file itself."""
    source = Path(path).expanduser().resolve()
    if not source.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        text = source.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise RecipeError(f"invalid recipe {source}: not UTF-8 text") from None
    recipe = parse_recipe(text, origin.expanduser().resolve() if origin else source)
    # Hash the exact bytes, not a re-serialisation: same file, same sha everywhere.
    recipe._sha256 = hashlib.sha256(source.read_bytes()).hexdigest()
    return recipe
