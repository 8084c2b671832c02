"""uptake.models.generation: the one preparation for generation that evaluation and serving
share — padding, end of turn, the template and its bounded rendering, the CPU-thread rule."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest

from uptake.errors import InputError
from uptake.models import LoadedModel, chatml, load_model_and_tokenizer
from uptake.models.chat_templates import TemplateRenderError
from uptake.models.generation import GenerationPrep, cpu_threads
from uptake.testing.tiny_models import TinyModelSpec, build_tiny_model

# A model's own template (Zephyr's layout), using a special-token variable as real ones do.
ZEPHYR = (
    "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system role') }}"
    "{% endif %}{{ '<|' + m.role + '|>\n' + m.content + eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
USER = [{"role": "user", "content": "Deadline?"}]
SYSTEM = [{"role": "system", "content": "Be brief."}, *USER]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    path = build_tiny_model(tmp_path_factory.mktemp("prep") / "llama", TinyModelSpec())
    return load_model_and_tokenizer(path, device="cpu")


def prep_with(loaded: LoadedModel, template: str | None, **kwargs: Any) -> GenerationPrep:
    """A prep of the shared tiny model whose tokenizer carries ``template`` (a copy: the prep
    sets the tokenizer up in place)."""
    tokenizer = copy.deepcopy(loaded.tokenizer)
    tokenizer.chat_template = template
    return GenerationPrep(tokenizer, loaded.model, loaded.device, name="acme/tiny", **kwargs)


def test_pad_equals_eos_model_pads_left_with_eos(tmp_path: Path) -> None:
    path = build_tiny_model(tmp_path / "padeos", TinyModelSpec(arch="qwen2", pad_equals_eos=True))
    loaded = load_model_and_tokenizer(path, device="cpu")
    prep = GenerationPrep.of(loaded, name="padeos")
    eos = loaded.tokenizer.eos_token_id
    assert prep.pad_id == eos and eos in prep.eos_ids
    assert prep.tokenizer.padding_side == "left"
    ids, mask = prep.left_pad([[7, 8, 9], [5]])
    assert ids == [[7, 8, 9], [eos, eos, 5]] and mask == [[1, 1, 1], [0, 0, 1]]


def test_a_missing_pad_token_becomes_eos_and_neither_is_one_line(loaded: LoadedModel) -> None:
    tokenizer = copy.deepcopy(loaded.tokenizer)
    tokenizer.pad_token = None
    prep = GenerationPrep(tokenizer, loaded.model, loaded.device, name="nopad")
    assert prep.pad_id == tokenizer.eos_token_id
    tokenizer = copy.deepcopy(loaded.tokenizer)
    tokenizer.pad_token = tokenizer.eos_token = None
    with pytest.raises(InputError, match=r"^tokenizer of nopad has neither a pad nor an EOS"):
        GenerationPrep(tokenizer, loaded.model, loaded.device, name="nopad")


def test_end_of_turn_ids_and_room(loaded: LoadedModel) -> None:
    prep = prep_with(loaded, None)
    im_end = loaded.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert prep.eos_ids == sorted({loaded.tokenizer.eos_token_id, im_end})
    assert prep.max_positions == 1024
    assert prep.room(16, 1000) == 16
    assert prep.room(16, 1020) == 4  # what the context leaves
    assert prep.room(16, 1024) == prep.room(16, 5000) == 0  # the prompt fills it


def test_no_template_falls_back_to_chatml_in_process(loaded: LoadedModel) -> None:
    prep = prep_with(loaded, None)
    assert prep.uses_fallback_template and prep.template == chatml()
    assert not prep.renders_in_child
    assert prep.prompts([SYSTEM]) == [
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nDeadline?<|im_end|>\n"
        "<|im_start|>assistant\n"
    ]


def test_uptake_templates_shipped_by_a_model_render_in_process(loaded: LoadedModel) -> None:
    prep = GenerationPrep.of(loaded, name="tiny")  # built with uptake's ChatML training variant
    assert not prep.uses_fallback_template and not prep.renders_in_child
    (prompt,) = prep.prompts([USER])
    assert prompt == "<|im_start|>user\nDeadline?<|im_end|>\n<|im_start|>assistant\n"


def test_a_models_own_template_renders_in_one_warm_bounded_child(loaded: LoadedModel) -> None:
    prep = prep_with(loaded, ZEPHYR)
    try:
        assert prep.renders_in_child and not prep.uses_fallback_template
        renderer = prep._renderer
        assert renderer is not None
        pid = renderer.pid  # started (and checked) when the model was prepared
        assert pid is not None
        first, refused = prep.render([USER, SYSTEM])
        assert first.text == "<|user|>\nDeadline?<|endoftext|><|assistant|>\n"  # eos_token passed
        assert refused.text is None and refused.error == "TemplateError: no system role"
        with pytest.raises(InputError, match=r"acme/tiny fails on prompt #1: TemplateError"):
            prep.prompts([USER, SYSTEM])
        assert renderer.pid == pid  # the same child rendered them all: no process per render
    finally:
        prep.close()
    assert renderer.pid is None


# template, the refusal it must get, and the render deadline: the loop is ended by the deadline;
# the other two by their own bound, so they get a deadline that a loaded machine's slow child
# start (it imports transformers) cannot reach first
HOSTILE = {
    "loops": (
        "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
        r"did not render within 3 s|more than \d+ s of CPU",
        3,
    ),
    "explodes": ("{{ 'x' * 3000000000 }}", r"broke the sandbox's bounds .*MemoryError", 120),
    "floods": (
        "{% for i in range(99999) %}{{ 'y' * 20 }}{% endfor %}",
        "more than 1,000,000",
        120,
    ),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_template_is_refused_by_the_check_in_one_line(
    loaded: LoadedModel, kind: str
) -> None:
    template, reason, deadline_s = HOSTILE[kind]
    start = time.monotonic()
    with pytest.raises(TemplateRenderError) as caught:
        prep_with(loaded, template, render_timeout_s=deadline_s)
    message = str(caught.value)
    assert message.startswith("acme/tiny: the chat template ") and "\n" not in message
    assert len(message) < 500
    assert caught.match(reason)
    assert time.monotonic() - start < deadline_s + 30  # ended by its bound, not left running


def test_a_template_hostile_for_one_input_fails_that_render_and_the_next_one_works(
    loaded: LoadedModel,
) -> None:
    # Passes the check (its probes do not trigger it): why every later render stays bounded.
    trigger = (
        "{% for m in messages %}{% if 'xyzzy' in m.content %}{{ 'z' * 2000000 }}{% endif %}"
        "{{ m.content }}{% endfor %}"
    )
    prep = prep_with(loaded, trigger)
    try:
        with pytest.raises(TemplateRenderError, match="more than 1,000,000 characters"):
            prep.render([[{"role": "user", "content": "say xyzzy"}]])
        assert prep.prompts([USER]) == ["Deadline?"]  # a new child took over
    finally:
        prep.close()


def test_thread_rule(loaded: LoadedModel) -> None:
    import torch

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert cpu_threads(loaded.model, cpu, None) == 1  # ~0.4M parameters on CPU
    assert cpu_threads(loaded.model, cpu, 3) == 3  # asked for
    assert cpu_threads(loaded.model, cuda, None) is None
    big = torch.nn.Linear(5000, 5000, device="meta")  # 25M parameters, no memory
    assert cpu_threads(big, cpu, None) is None

    prep = prep_with(loaded, None, threads=1)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with prep.torch_threads():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2  # restored after the call (evaluation)
        prep.set_torch_threads()
        assert torch.get_num_threads() == 1  # for good (serving's generation thread)
    finally:
        torch.set_num_threads(before)


# A Hermes-style template that renders tools and earlier calls (arguments as an object).
HERMES = (
    "{% if tools %}{% for t in tools %}{{ t.function.name }};{% endfor %}{% endif %}"
    "{% for m in messages %}{% if m.tool_calls %}{% for c in m.tool_calls %}"
    "<tool_call>{{ c.function.name }}:{{ c.function.arguments.city }}</tool_call>"
    "{% endfor %}{% else %}<|{{ m.role }}|>{{ m.content }}{% endif %}{% endfor %}"
)
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
CALLED = [
    *USER,
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
]


@pytest.mark.parametrize("in_child", [True, False])
def test_tools_render_with_the_template_and_calls_reach_it_as_objects(
    loaded: LoadedModel, in_child: bool
) -> None:
    prep = prep_with(loaded, HERMES)
    try:
        if not in_child:  # the same rule in process (as for uptake's own templates)
            prep._renderer.close()  # type: ignore[union-attr]
            prep._renderer = None
        assert prep.supports_tools and prep.tool_format == "hermes"
        with_tools, without = prep.render([CALLED, CALLED], [TOOLS, None])
        assert with_tools.text is not None and with_tools.text.startswith("get_weather;")
        assert "<tool_call>get_weather:Paris</tool_call>" in with_tools.text
        assert without.text is not None and not without.text.startswith("get_weather;")
    finally:
        prep.close()
    plain = prep_with(loaded, None)  # uptake's ChatML: no tools
    assert not plain.supports_tools and plain.tool_format is None


def test_decoding_for_tools_keeps_the_call_markers(loaded: LoadedModel) -> None:
    tokenizer = copy.deepcopy(loaded.tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<tool_call>", "</tool_call>"]})
    prep = GenerationPrep(tokenizer, loaded.model, loaded.device, name="acme/tiny")
    ids = prep.encode('<tool_call>{"name": "f"}</tool_call><|im_end|>')
    assert prep.decode(ids) == '{"name": "f"}'  # special tokens dropped: the call is lost
    assert prep.decode(ids, keep_tool_markers=True) == '<tool_call>{"name": "f"}</tool_call>'
