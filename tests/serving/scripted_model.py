"""A tiny Llama that always writes the same answer: a tool call, for the tool-call tests.

A random tiny model never writes a well-formed call, so this one is built to: its attention
and MLP outputs are zero, so the next token depends on the last token alone (a bigram
model), and its output head maps each token of the script to the next one. Whatever the
prompt, the answer after the generation prompt is the script, then ``<|im_end|>``; a prompt
that already ends inside the script (a forced call's prefix) continues from there. The script's
pieces are added tokens, so each is one token and the chain never repeats one.

Its chat template is its own (rendered in the bounded child, as a release's template is), in
the Hermes style of Qwen 2.5: the tools listed in a system turn, calls as
``<tool_call>{…}</tool_call>``, tool results as ``<tool_response>`` in a user turn.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from uptake.models.chat_templates import CHATML_TOKENS
from uptake.models.tool_calls import forced_prefix
from uptake.testing.tiny_models import DEFAULT_CORPUS, train_tokenizer

TOOL = "get_weather"
ARGUMENTS = {"city": "Paris"}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": TOOL,
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
    },
]

TEMPLATE = (
    "{%- if tools %}<|im_start|>system\nYou may call these tools:\n"
    "{%- for tool in tools %}\n{{ tool | tojson }}{%- endfor %}\n"
    'Call one as <tool_call>{"name": …, "arguments": …}</tool_call>.<|im_end|>\n{% endif %}'
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant\n"
    "{%- for call in message.tool_calls %}"
    '<tool_call>{"name": {{ call.function.name | tojson }}, '
    '"arguments": {{ call.function.arguments | tojson }}}</tool_call>'
    "{%- endfor %}<|im_end|>\n"
    "{%- elif message.role == 'tool' %}<|im_start|>user\n"
    "<tool_response>{{ message.content }}</tool_response><|im_end|>\n"
    "{%- else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def script() -> list[str]:
    """The answer, one token a piece; its first two pieces are a forced call's prefix."""
    prefix = forced_prefix("hermes", TOOL)
    marker, rest = prefix[: len("<tool_call>")], prefix[len("<tool_call>") :]
    return [marker, rest, json.dumps(ARGUMENTS), "}\n", "</tool_call>"]


def build_scripted_model(out: Path, hidden: int = 64) -> Path:
    import torch
    from tokenizers import AddedToken
    from transformers import LlamaConfig, LlamaForCausalLM

    pieces = script()
    tokenizer = train_tokenizer(DEFAULT_CORPUS, 400)
    tokenizer.add_special_tokens({"additional_special_tokens": list(CHATML_TOKENS)})
    tokenizer.add_tokens([AddedToken(p, normalized=False, special=False) for p in pieces])
    tokenizer.pad_token = "<|pad|>"
    tokenizer.chat_template = TEMPLATE
    ids = [tokenizer.convert_tokens_to_ids(p) for p in pieces]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    last = tokenizer(rendered, add_special_tokens=False)["input_ids"][-1]
    chain = [last, *ids, end]
    assert len(set(chain)) == len(chain), "the script must not repeat a token"

    config = LlamaConfig(
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=16,
        max_position_embeddings=1024,
        vocab_size=len(tokenizer),
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        embed = model.model.embed_tokens.weight
        embed.normal_()
        layer = model.model.layers[0]
        layer.self_attn.o_proj.weight.zero_()  # no attention: the last token alone decides
        layer.mlp.down_proj.weight.zero_()
        head = model.lm_head.weight
        head.zero_()
        for token, after in itertools.pairwise(chain):
            head[after] += 10 * embed[token] / embed[token].norm()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
