"""Weights and templates from a release are untrusted: a hostile safetensors header or chat
template becomes a preflight refusal with its reason, within seconds, never a crash or a hang."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

from pipeline.train import load_recipe, preflight
from tests.train.helpers import write_recipe
from uptake.models.chat_templates import TemplateRenderError, chatml, render_bounded
from uptake.models.files import MalformedWeights, safetensors_header_params


@pytest.fixture
def recipe(tmp_path):
    return load_recipe(write_recipe(tmp_path / "recipe"))


def _write_header(path: Path, header: object, *, declared: int | None = None) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if declared is None else declared) + raw)


HOSTILE_HEADERS = {
    "huge_declared": ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, 2**40),
    "not_a_dict": ([1, 2, 3], None),
    "string_dimension": ({"a": {"dtype": "F32", "shape": ["x"], "data_offsets": [0, 4]}}, None),
    "shape_not_a_list": ({"a": {"dtype": "F32", "shape": 7}}, None),
    "tensor_not_a_dict": ({"a": "oops"}, None),
    "truncated": ({"a": {"shape": [1]}}, 10_000),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_HEADERS))
def test_a_malformed_safetensors_header_refuses_the_model_with_its_reason(
    case, model_copy, recipe
) -> None:
    model = model_copy("llama")
    header, declared = HOSTILE_HEADERS[case]
    _write_header(model / "model.safetensors", header, declared=declared)
    report = preflight(model, recipe)
    assert "weights_format" in [r.check for r in report.refusals]
    reason = next(r.reason for r in report.refusals if r.check == "weights_format")
    assert reason.startswith("model.safetensors: ")


def test_the_header_reader_caps_the_declared_size_before_reading(tmp_path) -> None:
    path = tmp_path / "w.safetensors"
    _write_header(path, {}, declared=2**40)
    with pytest.raises(MalformedWeights, match="1,099,511,627,776 bytes declared"):
        safetensors_header_params(path)
    _write_header(path, {"a": {"shape": [2, 3]}, "b": {"shape": []}, "__metadata__": {}})
    assert safetensors_header_params(path) == 7


HOSTILE_TEMPLATES = {
    "range_past_the_sandbox": "{% for i in range(10**9) %}x{% endfor %}",
    "nested_loops": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    ),
    "gigabytes_of_text": "{{ 'x' * 10**10 }}",
    "megabytes_of_prompt": "{% for i in range(100000) %}{{ 'y' * 100 }}{% endfor %}",
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TEMPLATES))
def test_a_hostile_chat_template_is_refused_within_seconds(case, model_copy, recipe) -> None:
    model = model_copy("llama")
    (model / "chat_template.jinja").write_text(HOSTILE_TEMPLATES[case])
    start = time.monotonic()
    report = preflight(model, recipe)
    took = time.monotonic() - start
    assert [r.check for r in report.refusals] == ["chat_template"], report.refusals
    assert report.refusals[0].reason.startswith("the chat template ")
    assert took < 30, took  # the render is killed at its 10 s bound, not left to run


def test_bounded_render_matches_the_tokenizer_and_reports_template_errors(tiny_models) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    raising = "{{ raise_exception('roles must alternate') }}"
    ok, bad = (
        render_bounded(chatml(), [messages, messages], add_generation_prompt=[True, False])[0],
        render_bounded(raising, [messages], add_generation_prompt=False)[0],
    )
    expected = tok.apply_chat_template(
        messages, chat_template=chatml(), tokenize=False, add_generation_prompt=True
    )
    assert ok.text == expected and ok.error is None
    assert bad.text is None and "roles must alternate" in str(bad.error)
    with pytest.raises(TemplateRenderError, match="did not render within 2 s"):
        render_bounded(
            HOSTILE_TEMPLATES["nested_loops"], [messages], add_generation_prompt=False, timeout_s=2
        )
