"""The transformers engine with a model's own chat template: rendered in the version's warm
bounded child (no process per batch), a conversation the template rejects fails only its own
request, and a hostile template refuses the load."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from serving.engine import GenerationRequest
from serving.engines.transformers_engine import TransformersEngine
from uptake.errors import InputError
from uptake.models.chat_templates import TemplateRenderError
from uptake.testing.tiny_models import TinyModelSpec, build_tiny_model

OWN = (
    "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system role') }}"
    "{% endif %}{{ '<|' + m.role + '|>\n' + m.content + eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def with_template(path: Path, template: str) -> Path:
    from transformers import AutoTokenizer

    build_tiny_model(path, TinyModelSpec(hidden_size=64, weight_scale=5.0))
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(path)
    return path


def ask(content: str, role: str = "user") -> GenerationRequest:
    messages = [{"role": role, "content": content}]
    if role == "system":
        messages.append({"role": "user", "content": content})
    return GenerationRequest.model_validate(
        {"messages": messages, "max_tokens": 3, "temperature": 0}
    )


def test_own_template_renders_in_one_warm_child_and_a_rejected_prompt_fails_alone(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        engine = TransformersEngine(device="cpu", batch_window_ms=300, torch_threads=1)
        version = await engine.load("m", "1", with_template(tmp_path / "own", OWN))
        try:
            renderer = version.prep._renderer
            assert renderer is not None
            pid = renderer.pid
            for i in range(3):  # three batches
                assert (await version.generate(ask(f"deadline {i}?"))).completion_tokens > 0
            assert renderer.pid == pid  # one child for all of them, started at load
            batches = version.batches
            good, bad = await asyncio.gather(
                version.generate(ask("deadline?")),
                version.generate(ask("deadline?", role="system")),
                return_exceptions=True,
            )
            assert not isinstance(good, BaseException) and good.completion_tokens > 0
            assert isinstance(bad, InputError) and "no system role" in str(bad)
            assert version.batches == batches + 1  # they were one batch: the good one ran
        finally:
            await engine.aclose()
        assert renderer.pid is None  # closing the version ended its render child

    asyncio.run(main())


def test_a_hostile_template_refuses_the_load_in_one_line(tmp_path: Path) -> None:
    async def main() -> None:
        engine = TransformersEngine(device="cpu")
        hostile = with_template(tmp_path / "hostile", "{{ 'x' * 3000000000 }}")
        with pytest.raises(TemplateRenderError) as caught:
            await engine.load("m", "1", hostile)
        message = str(caught.value)
        assert message.startswith(f"{hostile}: the chat template broke the sandbox's bounds")
        assert "\n" not in message
        await engine.aclose()

    asyncio.run(main())
