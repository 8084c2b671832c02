"""Resume: kill a training process mid-run, retry the same run, and prove it continued."""

from __future__ import annotations

import pytest

from pipeline.train import TrainProgress, load_recipe, train
from pipeline.train.run_dir import last_checkpoint
from tests.train.helpers import corpus, memo_rows, train_killed_after_checkpoint, write_recipe
from uptake.testing.tiny_models import TinyModelSpec, build_tiny_model

MAX_STEPS = 160
SAVE_STEPS = 10


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(tmp_path) -> None:
    # The hardest case to resume: LoRA, plus tokens preflight adds (embeddings resized with
    # sampled rows, the tied embedding trained next to the adapter) — all of it must come back.
    spec = TinyModelSpec(arch="llama", chat_template="none", pad_equals_eos=True, bare_vocab=True)
    base = build_tiny_model(tmp_path / "base", spec, corpus=corpus(memo_rows(200)))
    recipe_path = write_recipe(
        tmp_path / "recipe",
        stages={
            "sft": {
                "max_steps": MAX_STEPS,
                "batch_size": 4,
                "save_steps": SAVE_STEPS,
                "save_total_limit": 2,
            }
        },
    )
    out = tmp_path / "run"
    killed_at = train_killed_after_checkpoint(
        base, recipe_path, out, "sft", 2 * SAVE_STEPS, tmp_path / "first.log"
    )
    assert not (out / "model").exists()
    assert SAVE_STEPS * 2 <= killed_at < MAX_STEPS

    # Retrying without --resume is refused: the directory holds the interrupted run.
    with pytest.raises(Exception, match="pass --resume"):
        train(base, load_recipe(recipe_path), out, profile="cpu")

    events: list[TrainProgress] = []
    result = train(
        base,
        load_recipe(recipe_path),
        out,
        profile="cpu",
        resume=True,
        on_progress=events.append,
    )
    assert result.resumed_from_step == killed_at
    assert result.steps == MAX_STEPS
    assert result.stages[0].session_steps == MAX_STEPS - killed_at
    assert events[0].step == killed_at  # the first event is the restored global step
    assert [e.step for e in events[1:]] == list(range(killed_at + 1, MAX_STEPS + 1))
    # Tokens carry over from the checkpoint; this session only counts its own.
    assert result.tokens > result.stages[0].session_tokens > 0
    assert (result.model_dir / "model.safetensors").is_file()
    assert result.preflight["added_tokens"] == ["<|im_start|>", "<|im_end|>", "<|uptake_pad|>"]
    losses = [loss for _, loss in result.stages[0].losses]
    assert losses[-1] < losses[0]  # the restored adapter and embedding kept learning


def test_a_half_written_checkpoint_is_not_resumed_from(tmp_path) -> None:
    ckpts = tmp_path / "checkpoints"
    for step, complete in ((10, True), (20, True), (30, False)):
        (ckpts / f"checkpoint-{step}").mkdir(parents=True)
        if complete:
            (ckpts / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert last_checkpoint(ckpts).name == "checkpoint-20"
    assert last_checkpoint(tmp_path / "missing") is None
