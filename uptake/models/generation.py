"""A loaded model prepared for generation: one set of rules for evaluation and serving.

Evaluation scores a checkpoint and serving answers with it; unless both render the same prompt,
stop at the same tokens and pad the same way, the served champion is not the model that was
scored. ``GenerationPrep`` is made once per loaded model and holds every such rule:

- **padding**: left padding; a tokenizer without a pad token pads with its EOS token (one with
  neither is refused);
- **end of turn**: the generation config's EOS ids, the tokenizer's EOS and ChatML's
  ``<|im_end|>``; decoded text is cut at ChatML's stop texts (``stop_texts``), which a model
  on the fallback template may spell out;
- **template**: the tokenizer's chat template (of several, ``default`` or else the first), or
  uptake's ChatML when it has none;
- **rendering**: uptake's own templates (ChatML and its training variant, matched by text)
  render in process. Any other template came with the release and is untrusted: it renders
  in a child process of its own (``TemplateRenderer``), checked once here on probe
  conversations (a template that loops or floods memory or output refuses the model, in one
  line) and bounded on every render after. Not in process after the check, because a
  template can be hostile for some input only (a loop keyed to a message's content): in
  process such a render would hold serving's batching thread for good (a thread cannot be
  stopped); in its child it fails that request and the child is replaced. The child stays
  warm, so a render costs a pipe round trip (0.16 ms against 0.06 ms in process), not the
  ~1 s process start of a child per batch (bench/template_render.py, docs/performance.md);
- **tools**: a template that names ``tools`` renders the OpenAI tool definitions it is given
  (``supports_tools``); the call format its model writes is read from its text
  (``tool_format``, ``uptake.models.tool_calls``), and ``decode(…, keep_tool_markers=True)``
  keeps the special tokens that mark a call (``<tool_call>``, ``[TOOL_CALLS]``) which plain
  decoding drops; an assistant message's earlier calls reach the template with their
  arguments as objects (``template_messages``), as Hugging Face templates expect;
- **context**: ``room`` is what a prompt leaves of the model's positions;
- **CPU threads**: a model under ``SMALL_MODEL_PARAMS`` on CPU uses one torch thread unless
  told otherwise: such a model's kernels are too small to share, and on a busy 2-core machine a
  tiny model ran 15x faster on 1 thread than on 2 oversubscribed ones.

A new rule of this kind goes here, so both callers follow it (docs/architecture.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from uptake.errors import InputError
from uptake.models.chat_templates import (
    CHATML_STOP_TEXTS,
    Rendered,
    TemplateRenderer,
    TemplateRenderError,
    chatml,
    chatml_training,
)
from uptake.models.loader import LoadedModel
from uptake.models.tool_calls import (
    MARKER_TOKENS,
    ToolCallFormat,
    detect_format,
    template_supports_tools,
)

SMALL_MODEL_PARAMS = 20_000_000  # below this, CPU generation uses one torch thread by default

Conversation = list[dict[str, Any]]

# What the bounded check renders once: a system turn, and a multi-turn exchange. A template may
# reject either (many refuse a system role); only a broken bound refuses the model.
PROBES: list[Conversation] = [
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "ping"}],
    [
        {"role": "user", "content": "ping"},
        {"role": "assistant", "content": "pong"},
        {"role": "user", "content": "ping"},
    ],
]


def template_messages(conversation: Conversation) -> Conversation:
    """Messages as chat templates expect them: an assistant's earlier tool calls carry their
    arguments as an object (OpenAI sends JSON text; templates index or ``tojson`` them)."""
    out = []
    for message in conversation:
        calls = message.get("tool_calls")
        if calls:
            message = {**message, "tool_calls": [_template_call(c) for c in calls]}
        out.append(message)
    return out


def _template_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("arguments"), str):
        return call
    try:
        arguments = json.loads(function["arguments"])
    except ValueError:
        return call  # left as text: the template shows what the client sent
    return {**call, "function": {**function, "arguments": arguments}}


def chosen_template(tokenizer: Any) -> str | None:
    """The tokenizer's own chat template: of several, ``default``, else the first; None if none."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default") or next(iter(template.values()), None)
    return str(template) if template else None


def is_uptake_template(template: str) -> bool:
    """uptake's own text (ChatML or its training variant): known, so it renders in process."""
    return template.strip() in (chatml().strip(), chatml_training().strip())


def end_of_turn_ids(model: Any, tokenizer: Any) -> list[int]:
    """The generation config's EOS ids, the tokenizer's EOS and ChatML's ``<|im_end|>``."""
    ids: set[int] = set()
    configured = model.generation_config.eos_token_id
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end >= 0 and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    return sorted(ids)


def cpu_threads(model: Any, device: Any, threads: int | None) -> int | None:
    """Torch threads for generation: ``threads`` when given; else one for a model under
    ``SMALL_MODEL_PARAMS`` on CPU; else None (torch's default)."""
    if threads is not None or device.type != "cpu":
        return threads
    n_params = sum(p.numel() for p in model.parameters())
    return 1 if n_params < SMALL_MODEL_PARAMS else None


class GenerationPrep:
    """A loaded model's tokenizer set up for generation, and the rules above.

    ``name`` names the model in errors. ``render_timeout_s`` bounds the template check (the
    renders after it have their own default). ``close`` ends the template's child.
    """

    stop_texts: tuple[str, ...] = CHATML_STOP_TEXTS

    def __init__(
        self,
        tokenizer: Any,
        model: Any,
        device: Any,
        *,
        name: str,
        threads: int | None = None,
        render_timeout_s: float | None = None,
    ) -> None:
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token_id is None:
                raise InputError(f"tokenizer of {name} has neither a pad nor an EOS token")
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer
        self.name = name
        self.pad_id = int(tokenizer.pad_token_id)
        self.eos_ids = end_of_turn_ids(model, tokenizer)
        self.max_positions: int | None = getattr(model.config, "max_position_embeddings", None)
        self.threads = cpu_threads(model, device, threads)
        own = chosen_template(tokenizer)
        self.uses_fallback_template = own is None
        self.template = own or chatml()
        self.supports_tools = template_supports_tools(self.template)
        self.tool_format: ToolCallFormat | None = detect_format(self.template)
        # what plain decoding skips (tokens flagged special), less the tokens that mark a call
        special = set(tokenizer.all_special_ids) | {
            i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if t.special
        }
        markers = {tokenizer.convert_tokens_to_ids(t) for t in MARKER_TOKENS}
        self._dropped_ids = special - markers
        self._renderer: TemplateRenderer | None = None
        if not is_uptake_template(self.template):
            self._renderer = self._checked_renderer(render_timeout_s)

    @classmethod
    def of(cls, loaded: LoadedModel, *, name: str, threads: int | None = None) -> GenerationPrep:
        return cls(loaded.tokenizer, loaded.model, loaded.device, name=name, threads=threads)

    @property
    def renders_in_child(self) -> bool:
        """The template is the release's own (untrusted): it renders in its bounded child."""
        return self._renderer is not None

    def _checked_renderer(self, timeout_s: float | None) -> TemplateRenderer:
        renderer = TemplateRenderer(self.template, dict(self.tokenizer.special_tokens_map))
        try:
            renderer.render(PROBES, add_generation_prompt=True, timeout_s=timeout_s)
        except TemplateRenderError as exc:
            renderer.close()
            raise TemplateRenderError(f"{self.name}: {exc}") from None
        return renderer

    # -- prompts ---------------------------------------------------------------------------

    def render(
        self,
        conversations: list[Conversation],
        tools: list[list[dict[str, Any]] | None] | None = None,
    ) -> list[Rendered]:
        """Each conversation's prompt text (generation prompt added), or the template's error
        for it; ``tools`` are each conversation's tool definitions (None: none). Raises
        ``TemplateRenderError`` when the model's own template breaks a bound."""
        conversations = [template_messages(c) for c in conversations]
        per_tools = list(tools) if tools is not None else [None] * len(conversations)
        if self._renderer is not None:
            return self._renderer.render(conversations, add_generation_prompt=True, tools=per_tools)
        out = []
        for conversation, its_tools in zip(conversations, per_tools, strict=True):
            try:
                text = self.tokenizer.apply_chat_template(
                    conversation,
                    tools=its_tools or None,
                    chat_template=self.template,
                    tokenize=False,
                    add_generation_prompt=True,
                )
            except Exception as exc:  # uptake's templates need role and content, nothing else
                out.append(Rendered(error=f"{type(exc).__name__}: {str(exc)[:300]}"))
            else:
                out.append(Rendered(text=str(text)))
        return out

    def prompts(self, conversations: list[Conversation]) -> list[str]:
        """Prompt texts; the first conversation the template rejects raises InputError."""
        texts = []
        for i, rendered in enumerate(self.render(conversations)):
            if rendered.text is None:
                raise InputError(
                    f"the chat template of {self.name} fails on prompt #{i}: {rendered.error}"
                )
            texts.append(rendered.text)
        return texts

    def decode(self, ids: list[int], *, keep_tool_markers: bool = False) -> str:
        """Generated ids as text, special tokens dropped; with ``keep_tool_markers`` the
        tokens that mark a tool call stay (a model's calls would vanish without them)."""
        if keep_tool_markers:
            kept = [i for i in ids if i not in self._dropped_ids]
            return str(self.tokenizer.decode(kept, skip_special_tokens=False))
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def encode(self, prompt: str) -> list[int]:
        """A rendered prompt's token ids (the template already placed any special tokens)."""
        return list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def room(self, max_new_tokens: int, prompt_tokens: int) -> int:
        """New tokens a prompt may get: ``max_new_tokens``, or what the context leaves (0: the
        prompt alone fills it)."""
        if not self.max_positions:
            return max_new_tokens
        return max(0, min(max_new_tokens, self.max_positions - prompt_tokens))

    def left_pad(self, rows: list[list[int]]) -> tuple[list[list[int]], list[list[int]]]:
        """Input ids and attention mask for a batch, padded on the left to its longest row."""
        width = max(len(ids) for ids in rows)
        ids = [[self.pad_id] * (width - len(row)) + row for row in rows]
        mask = [[0] * (width - len(row)) + [1] * len(row) for row in rows]
        return ids, mask

    # -- threads ---------------------------------------------------------------------------

    @contextmanager
    def torch_threads(self) -> Iterator[None]:
        """Run the block on this model's torch thread count, restored after (evaluation)."""
        if self.threads is None:
            yield
            return
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def set_torch_threads(self) -> None:
        """Set this model's torch thread count for good (serving's generation thread: restoring
        it when one version closes would change it under the version that replaced it)."""
        if self.threads is not None:
            import torch

            torch.set_num_threads(self.threads)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
