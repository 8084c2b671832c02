"""Tokenizer adapters: a chat template with generation markers, EOS at the end of a turn, a pad
that is no stop token.

- chat template: assistant-only loss needs ``{% generation %}`` markers. A template without them
  is patched (TRL's training version of a known template, or markers added to a ChatML one), and
  a tokenizer with no template, or an unknown one, gets the ChatML training template from
  ``uptake.models``. The saved model carries the template it was trained with, so evaluation
  and serving prompt it the same way.
- EOS: generation stops at EOS, so EOS must be the token that ends an assistant turn in the
  template; otherwise the model rambles past its answer.
- pad: a pad token equal to a stop token makes padding-masking code mask the stop token too, so
  the model never learns to stop. A distinct pad is used (added, with embeddings resized).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.train.preflight.report import Adapter, PreflightReport, Prepared, Refusal
from pipeline.train.recipe import Recipe
from uptake.models import CHATML_TOKENS, chatml_training
from uptake.models.chat_templates import TemplateRenderError, render_bounded
from uptake.models.files import read_json

PAD_CANDIDATES = (
    "<|pad|>",
    "<pad>",
    "[PAD]",
    "<|finetune_right_pad_id|>",
    "<|finetune_right_pad|>",
)
NEW_PAD_TOKEN = "<|uptake_pad|>"
_PROBE = [
    {"role": "user", "content": "first question"},
    {"role": "assistant", "content": "first answer"},
    {"role": "user", "content": "second question"},
    {"role": "assistant", "content": "second answer"},
]
_SENTINEL = "UPTAKE-SENTINEL-7f3a"
_TRL_PROBE = [  # what TRL's stop-token check renders
    {"role": "user", "content": "dummy"},
    {"role": "assistant", "content": "dummy"},
    {"role": "user", "content": "dummy"},
]


def _own_template(tok: Any) -> str | None:
    template = tok.chat_template
    if isinstance(template, dict):
        template = template.get("default")
    return template or None


def _template_is_bounded(tok: Any, report: PreflightReport) -> bool:
    """Render the model's own template, bounded, on every conversation preflight renders.

    The template comes with the release: one that loops for minutes or builds gigabytes of text
    would hang or exhaust this process when rendered in it, so it is first rendered in a child
    with a time, memory and output bound (``render_bounded``) and refused if it breaks one.
    Afterwards the in-process renders see the same conversations.
    """
    template = _own_template(tok)
    if template is None:
        return True
    sentinel = [{"role": "user", "content": "ping"}, {"role": "assistant", "content": _SENTINEL}]
    conversations = [_PROBE, _PROBE[:3], sentinel, _TRL_PROBE]
    try:
        render_bounded(
            template,
            conversations,
            add_generation_prompt=[False, True, False, False],
            variables=dict(tok.special_tokens_map),
        )
    except TemplateRenderError as exc:
        report.refusals.append(Refusal(check="chat_template", reason=str(exc)))
        return False
    return True


def _render(tok: Any, template: str | None, messages: list[dict], gen_prompt: bool) -> str | None:
    try:
        out = tok.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=gen_prompt
        )
    except Exception:  # templates raise on anything they do not like (roles, missing keys)
        return None
    return out if isinstance(out, str) else None


def _renders_like_chatml(tok: Any, template: str) -> bool:
    for gen in (False, True):
        mine = _render(tok, template, _PROBE[:3] if gen else _PROBE, gen)
        theirs = _render(tok, chatml_training(), _PROBE[:3] if gen else _PROBE, gen)
        if mine is None or mine != theirs:
            return False
    return True


def _stop_token_trained(tok: Any, template: str) -> bool:
    from trl.chat_template_utils import has_generation_markers, is_chat_template_stop_token_trained

    if not has_generation_markers(template):
        return False
    try:
        return is_chat_template_stop_token_trained(tok, chat_template=template)
    except Exception:
        return False


def _ensure_tokens(tok: Any, tokens: Iterable[str], report: PreflightReport) -> None:
    from transformers import AddedToken

    vocab = tok.get_vocab()
    new = [t for t in tokens if t not in vocab]
    if new:
        tok.add_tokens(
            [AddedToken(t, special=True, normalized=False) for t in new], special_tokens=True
        )
        report.added_tokens.extend(new)


def _adapt_chat_template(tok: Any, report: PreflightReport, assistant_only_loss: bool) -> None:
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = tok.chat_template
    if isinstance(template, dict):
        template = template.get("default")
    if not template:
        _fallback_chatml(
            tok,
            report,
            "tokenizer has no chat template; installed ChatML with {% generation %} markers "
            "(saved with the model, so eval and serving use it too)",
        )
        return
    if _stop_token_trained(tok, template):
        return  # markers present and the end-of-turn token is inside them
    if not assistant_only_loss and _render(tok, template, _PROBE, False) is not None:
        report.notes.append("chat template has no usable {% generation %} markers (not needed)")
        return
    why = (
        "template lacks {% generation %} markers"
        if not has_generation_markers(template)
        else "template's {% generation %} span leaves out the end-of-turn token"
    )
    try:
        patched = get_training_chat_template(tok)
    except Exception:
        patched = None
    if patched and _stop_token_trained(tok, patched):
        tok.chat_template = patched
        report.adapters.append(
            Adapter(
                name="chat_template",
                action="trl_training_template",
                reason=f"{why}; swapped in TRL's training version of the same template",
            )
        )
        return
    if _renders_like_chatml(tok, template):
        tok.chat_template = chatml_training()
        report.adapters.append(
            Adapter(
                name="chat_template",
                action="added_generation_markers",
                reason=f"{why}; the template is ChatML, replaced by the same ChatML with markers "
                "(renders identically)",
            )
        )
        return
    _fallback_chatml(
        tok,
        report,
        f"{why} and is not a template TRL can patch; replaced by ChatML with markers "
        "(the saved model carries it, so eval and serving prompt the same way)",
    )


def _fallback_chatml(tok: Any, report: PreflightReport, reason: str) -> None:
    """Install ChatML with generation markers, adding its tokens when the vocabulary lacks them."""
    _ensure_tokens(tok, CHATML_TOKENS, report)
    tok.chat_template = chatml_training()
    report.adapters.append(Adapter(name="chat_template", action="fallback_chatml", reason=reason))


def end_of_turn_token(tok: Any) -> str | None:
    """The special token the template emits right after an assistant message."""
    messages = [{"role": "user", "content": "ping"}, {"role": "assistant", "content": _SENTINEL}]
    text = _render(tok, None, messages, False)
    if text is None or _SENTINEL not in text:
        return None
    suffix = text[text.rindex(_SENTINEL) + len(_SENTINEL) :]
    specials = set(tok.get_added_vocab()) | set(tok.all_special_tokens)
    found = [(suffix.find(t), -len(t), t) for t in specials if t and t in suffix]
    return min(found)[2] if found else None


def _token_id(tok: Any, token: str) -> int:
    """One token's id (``convert_tokens_to_ids`` is typed for a list too)."""
    token_id = tok.convert_tokens_to_ids(token)
    assert isinstance(token_id, int), token
    return token_id


def _generation_eos_ids(model_dir: Path) -> list[int]:
    ids = read_json(model_dir / "generation_config.json").get("eos_token_id")
    if ids is None:
        return []
    return [ids] if isinstance(ids, int) else [i for i in ids if isinstance(i, int)]


def _adapt_eos(tok: Any, report: PreflightReport) -> None:
    eot = end_of_turn_token(tok)
    report.end_of_turn_token = eot
    if eot is None:
        report.notes.append("no special end-of-turn token found after assistant turns")
        return
    if tok.eos_token != eot:
        old = tok.eos_token
        tok.eos_token = eot
        report.adapters.append(
            Adapter(
                name="eos_token",
                action=f"{old!r} -> {eot!r}",
                reason=f"the chat template ends assistant turns with {eot!r} but EOS was {old!r}: "
                f"generation would not stop at the end of an answer ({old!r} stays a stop token)",
            )
        )
        if old is not None:
            report.stop_tokens.append(old)


def _adapt_pad(tok: Any, report: PreflightReport, stop_ids: set[int]) -> None:
    pad_id = tok.pad_token_id
    if tok.pad_token is not None and pad_id not in stop_ids:
        return
    vocab = tok.get_vocab()
    old = tok.pad_token
    choice = next((t for t in PAD_CANDIDATES if t in vocab and vocab[t] not in stop_ids), None)
    if choice is None:
        _ensure_tokens(tok, [NEW_PAD_TOKEN], report)
        choice = NEW_PAD_TOKEN
    tok.pad_token = choice
    how = "added" if choice in report.added_tokens else "reused existing"
    problem = (
        "tokenizer has no pad token"
        if old is None
        else f"pad {old!r} is a stop token: code that masks padding would mask the stop token too "
        "and the model would never learn to stop"
    )
    report.adapters.append(
        Adapter(name="pad_token", action=f"{old!r} -> {choice!r} ({how})", reason=problem)
    )


def adapt_tokenizer(prepared: Prepared, model_dir: Path, recipe: Recipe) -> bool:
    """Load the tokenizer and apply the chat-template, EOS and pad adapters; False if refused."""
    from transformers import AutoTokenizer

    report = prepared.report
    try:
        tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=report.trust_remote_code)
    except Exception as exc:
        report.refusals.append(
            Refusal(check="tokenizer", reason=f"tokenizer failed to load: {exc}")
        )
        return False
    prepared.tokenizer = tok
    if not _template_is_bounded(tok, report):
        return False
    sft = recipe.stages.sft
    _adapt_chat_template(tok, report, sft.assistant_only_loss if sft is not None else False)
    _adapt_eos(tok, report)
    report.eos_token = tok.eos_token
    stop_tokens = [t for t in [tok.eos_token, *report.stop_tokens] if t is not None]
    stop_ids = {_token_id(tok, t) for t in stop_tokens}
    stop_ids |= set(_generation_eos_ids(model_dir))
    _adapt_pad(tok, report, stop_ids)
    report.pad_token = tok.pad_token
    report.stop_tokens = list(dict.fromkeys(stop_tokens))
    prepared.stop_token_ids = list(dict.fromkeys(_token_id(tok, t) for t in stop_tokens))
    for extra in _generation_eos_ids(model_dir):
        if extra not in prepared.stop_token_ids:
            prepared.stop_token_ids.append(extra)
    return True
