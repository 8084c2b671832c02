"""Chat templates uptake ships, kept as ``.jinja`` files in ``templates/`` (as TRL keeps its own).

- ``chatml.jinja``: ChatML. The fallback prompt format for a tokenizer without a chat template
  (evaluation, serving) and the plain template of the tiny test models.
- ``chatml_training.jinja``: the same ChatML with ``{% generation %}`` markers around each
  assistant answer and its end-of-turn token. Assistant-only loss needs the markers; training
  installs it when a model has no template or a ChatML one without markers.

A new template is one more file in ``templates/`` and one name in ``TemplateName``.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Literal

TemplateName = Literal["chatml", "chatml_training"]
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
CHATML_STOP_TEXTS = ("<|im_end|>", "<|im_start|>")


@cache
def chat_template(name: TemplateName) -> str:
    """The template's text, exactly as ``tokenizer.chat_template`` should hold it."""
    text = files("uptake.models").joinpath(f"templates/{name}.jinja").read_text("utf-8")
    return text.rstrip("\n")


def chatml() -> str:
    return chat_template("chatml")


def chatml_training() -> str:
    return chat_template("chatml_training")
