"""Fuzzing the suite loader and the recipe loader (hypothesis, bounded for CI).

Any input, however hostile, must give a result or the module's own error (InputError for a
suite, RecipeError for a recipe): any other exception is a crash that would stop a worker.
Inputs: random bytes and text, JSON/YAML of random shape over the formats' own keys, valid
files with one value replaced at a random place, and known-hostile lines (deep nesting,
integers over Python's digit limit, raw line separators, regexes that crash the parser).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.eval.suite import load_suite
from pipeline.train.recipe import RecipeError, load_recipe
from uptake.errors import InputError

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

SUITE_WORDS = [
    "suite", "id", "practice_area", "messages", "criteria", "max_new_tokens", "metadata",
    "role", "content", "description", "check", "type", "value", "pattern", "values", "checks",
    "ignore_case", "instructions", "name", "contains", "not_contains", "regex", "any_of",
    "all_of", "judge", "user", "assistant", "system",
]  # fmt: skip
HOSTILE_STRINGS = ["(" * 2000, "a{99999999999}", "[", "(?P<", "\u2028", "\x85", "\x00", ""]

keys = st.sampled_from(SUITE_WORDS) | st.text(max_size=6)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([0, 1, 10**12, -1, 2**63])
    | st.floats()
    | st.sampled_from(SUITE_WORDS + HOSTILE_STRINGS)
    | st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(keys, kids, max_size=5),
    max_leaves=25,
)

VALID_TASK: dict[str, Any] = {
    "id": "t1",
    "practice_area": "immigration",
    "messages": [{"role": "user", "content": "What is the deadline?"}],
    "criteria": [
        {"id": "c1", "description": "d", "check": {"type": "regex", "pattern": "x"}},
        {"id": "c2", "description": "d", "check": {"type": "any_of", "values": ["a"]}},
        {
            "id": "c3",
            "description": "d",
            "check": {"type": "all_of", "checks": [{"type": "contains", "value": "y"}]},
        },
        {"id": "c4", "description": "d", "check": {"type": "judge"}},
    ],
    "max_new_tokens": 16,
}
TASK_PATHS: list[tuple[Any, ...]] = [
    (),
    ("id",),
    ("practice_area",),
    ("messages",),
    ("messages", 0),
    ("messages", 0, "role"),
    ("messages", 0, "content"),
    ("criteria",),
    ("criteria", 0),
    ("criteria", 0, "id"),
    ("criteria", 0, "check"),
    ("criteria", 0, "check", "type"),
    ("criteria", 0, "check", "pattern"),
    ("criteria", 1, "check", "values"),
    ("criteria", 1, "check", "checks"),
    ("criteria", 2, "check", "checks"),
    ("criteria", 2, "check", "checks", 0),
    ("criteria", 2, "check", "checks", 0, "type"),
    ("criteria", 3, "check", "instructions"),
    ("criteria", 0, "check", "ignore_case"),
    ("max_new_tokens",),
    ("metadata",),
    ("unknown",),
]


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    """``doc`` with the value at ``path`` replaced (or added)."""
    if not path:
        return value
    out = copy.deepcopy(doc)
    node = out
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return out


def _nested(depth: int, inner: dict[str, Any]) -> dict[str, Any]:
    for _ in range(depth):
        inner = {"type": "any_of", "checks": [inner]}
    return inner


DEEP_CHECK = _nested(300, {"type": "regex", "pattern": "x"})
BAD_PATTERNS = ["(" * 2000, "a{99999999999}"]  # RecursionError, OverflowError in re.compile
HOSTILE_LINES = [
    "[" * 100_000,
    '{"id": ' + "9" * 5000 + "}",
    json.dumps({**VALID_TASK, "max_new_tokens": 10**12}),
    json.dumps({**VALID_TASK, "metadata": {"n": 10**5000 // 10**4990}}),
    json.dumps(_replace(VALID_TASK, ("criteria", 2, "check"), DEEP_CHECK)),
    json.dumps({"suite": {"max_new_tokens": 10**12}}),
    '{"id": "t1", "messages": [{"role": "user", "content": "a\u2028b\x85c"}]}',
]  # fmt: skip

lines = (
    values.map(json.dumps)
    | st.tuples(st.sampled_from(TASK_PATHS), values).map(
        lambda pv: json.dumps(_replace(VALID_TASK, pv[0], pv[1]), ensure_ascii=False)
    )
    | st.sampled_from(HOSTILE_LINES)
    | st.text(max_size=40)
)
separators = st.sampled_from(["\n", "\r\n", "\u2028", "\x85", "\r", "\n\n"])


@st.composite
def suite_files(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200))
    chosen = draw(st.lists(lines, min_size=0, max_size=5))
    sep = draw(separators)
    return sep.join(chosen).encode("utf-8", errors="surrogatepass")


@FUZZ
@given(data=suite_files())
@example(data=("[" * 100_000).encode())
@example(data=('{"id": ' + "9" * 5000 + "}").encode())
@example(
    data=json.dumps(
        _replace(VALID_TASK, ("criteria", 0, "check", "pattern"), BAD_PATTERNS[0])
    ).encode()
)
@example(
    data=json.dumps(
        _replace(VALID_TASK, ("criteria", 0, "check", "pattern"), BAD_PATTERNS[1])
    ).encode()
)
@example(data="\u2028".join([json.dumps(VALID_TASK)] * 2).encode())
@example(data=b'{"\\n": null}')  # a field named by a newline (found by the fuzzer in CI)
def test_the_suite_loader_gives_a_suite_or_an_input_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "suite.jsonl"
    path.write_bytes(data)
    try:
        suite = load_suite(path)
    except InputError as exc:
        assert "\n" not in str(exc)  # the CLI prints one line
        return
    for task in suite.tasks:
        assert 1 <= suite.max_new_tokens_for(task) <= 131_072


# --- recipes --------------------------------------------------------------------------------

RECIPE_WORDS = [
    "name", "description", "seed", "max_length", "max_length_policy", "lora", "r", "alpha",
    "dropout", "target_modules", "stages", "sft", "dpo", "data", "epochs", "max_steps",
    "learning_rate", "lr_scheduler", "warmup_ratio", "batch_size", "hardware", "precision",
    "profiles", "cpu", "gpu", "profile", "packing", "beta", "loss_type", "num_processes",
    "train.jsonl", "~nobody-here/x.jsonl", "all-linear", "auto",
]  # fmt: skip
VALID_RECIPE: dict[str, Any] = {
    "name": "fuzz",
    "seed": 1,
    "max_length": 64,
    "lora": {"r": 4, "alpha": 8, "target_modules": "all-linear"},
    "stages": {"sft": {"data": "train.jsonl", "epochs": 1, "batch_size": 2}},
    "hardware": {"precision": "fp32"},
    "profiles": {"cpu": {"stages": {"sft": {"batch_size": 1}}}, "gpu": {"max_length": 128}},
}
RECIPE_PATHS: list[tuple[Any, ...]] = [
    (),
    ("name",),
    ("seed",),
    ("max_length",),
    ("lora",),
    ("lora", "r"),
    ("lora", "target_modules"),
    ("stages",),
    ("stages", "sft"),
    ("stages", "sft", "data"),
    ("stages", "sft", "epochs"),
    ("stages", "sft", "learning_rate"),
    ("stages", "dpo"),
    ("hardware",),
    ("hardware", "precision"),
    ("profiles",),
    ("profiles", "cpu"),
    ("profiles", "cpu", "stages"),
    ("profiles", "gpu", "max_length"),
    ("profiles", "gpu", "lora"),
]
recipe_keys = st.sampled_from(RECIPE_WORDS) | st.text(max_size=6)
recipe_values = st.recursive(
    scalars | st.sampled_from(RECIPE_WORDS),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(recipe_keys, kids, max_size=5),
    max_leaves=25,
)
HOSTILE_YAML = [
    "[" * 10_000,
    "a: &a [1]\nb: *c\n",
    "name: !!python/object:os.system x\n",
    "\t- x",
    "max_length: " + "9" * 5000 + "\nname: x\nstages: {sft: {data: train.jsonl}}\n",
]


@st.composite
def recipe_texts(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.text(max_size=80))
    if kind == 1:
        return draw(st.sampled_from(HOSTILE_YAML))
    if kind < 4:
        return yaml.safe_dump(draw(recipe_values))
    path = draw(st.sampled_from(RECIPE_PATHS))
    return yaml.safe_dump(_replace(VALID_RECIPE, path, draw(recipe_values)))


@pytest.fixture
def recipe_dir(tmp_path: Path) -> Path:
    (tmp_path / "train.jsonl").write_text(
        json.dumps({"messages": [{"role": "user", "content": "q"}]}) + "\n", encoding="utf-8"
    )
    return tmp_path


@FUZZ
@given(text=recipe_texts())
@example(text="[" * 10_000)
@example(text=yaml.safe_dump(_replace(VALID_RECIPE, ("stages", "sft", "data"), 5)))
@example(text=yaml.safe_dump(_replace(VALID_RECIPE, ("stages", "sft", "data"), "~nobody-here/x")))
def test_the_recipe_loader_gives_a_recipe_or_a_recipe_error(recipe_dir: Path, text: str) -> None:
    path = recipe_dir / "recipe.yaml"
    path.write_bytes(text.encode("utf-8", errors="surrogatepass"))
    try:
        load_recipe(path)
    except RecipeError as exc:
        assert "\n" not in str(exc)
