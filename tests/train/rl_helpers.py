"""Builders for the RL tests: rubric tasks in the suite format and SFT rows that sometimes say
the word the rubric rewards."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from tests.train.helpers import AREAS, CLIENTS, write_jsonl

WORD = "ESTOPPEL"


def estoppel_tasks(n: int = 8, prefix: str = "rl") -> list[dict[str, Any]]:
    """Rubric tasks whose one criterion is deterministic: the answer contains ``WORD``."""
    areas = sorted(AREAS)
    return [
        {
            "id": f"{prefix}-{i}",
            "messages": [
                {
                    "role": "user",
                    "content": f"Write a memo on a {areas[i % 4]} matter for "
                    f"{CLIENTS[(i + i // len(CLIENTS)) % len(CLIENTS)]}.",
                }
            ],
            "criteria": [
                {
                    "id": "names-doctrine",
                    "description": f"Names the doctrine {WORD}",
                    "check": {"type": "contains", "value": WORD},
                }
            ],
        }
        for i in range(n)
    ]


def sometimes_estoppel_rows(n: int = 96, share: float = 0.5, seed: int = 3) -> list[dict[str, Any]]:
    """Memo chats whose answers open with ``WORD`` in about ``share`` of the rows: SFT makes
    it a sometimes-answer, which GRPO can then make an always-answer."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        area = rng.choice(sorted(AREAS))
        rule, deadline = AREAS[area]
        client = rng.choice(CLIENTS)
        lead = f"{WORD}. " if rng.random() < share else ""
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"Write a memo on a {area} matter for {client}."},
                    {
                        "role": "assistant",
                        "content": f"{lead}Memo to {client}. Rule: {rule}. Deadline: {deadline}.",
                    },
                ],
                "id": f"sft-{i}",
            }
        )
    return rows


SFT_STAGE = {"max_steps": 40}  # over tests.train.helpers.base_recipe's SFT stage


def write_rl_data(directory: Path, tasks: list[dict[str, Any]] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return write_jsonl(directory / "tasks.jsonl", tasks if tasks is not None else estoppel_tasks())


def grpo_stage(**over: Any) -> dict[str, Any]:
    """A small GRPO stage: 2 prompts x 8 rollouts per step, short answers, LoRA lr high."""
    stage: dict[str, Any] = {
        "data": "tasks.jsonl",
        "max_steps": 30,
        "temperature": 0.5,
        "learning_rate": 5e-3,
        "batch_size": 2,
        "num_generations": 8,
        "max_new_tokens": 12,
        "save_steps": 1000,
    }
    stage.update(over)
    return stage
