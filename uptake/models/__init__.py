"""Safe model loading and the chat templates uptake ships, shared by training, eval and serving.

- ``files``: what a model directory holds (safetensors only, pickle weights refused);
- ``remote_code``: run a model's own code or not, decided from its files; copy that code along;
- ``loader``: load a causal LM and its tokenizer, device and dtype chosen once;
- ``chat_templates``: ChatML and its training variant, kept as ``templates/*.jinja``, and the
  bounded rendering of a release's own template (``template_child``, ``render_child``);
- ``generation``: a loaded model prepared for generation, one rule set for evaluation and
  serving (padding, end of turn, template and rendering, CPU threads).

Importing this package is cheap: torch and transformers load inside the functions that use them.
"""

from uptake.models.chat_templates import CHATML_TOKENS, chat_template, chatml, chatml_training
from uptake.models.files import PICKLE_SUFFIXES, WeightFiles, check_model_dir, weight_files
from uptake.models.generation import GenerationPrep
from uptake.models.loader import (
    LoadedModel,
    causal_lm_class,
    inference_dtype,
    load_model_and_tokenizer,
    load_weights,
    resolve_device,
)
from uptake.models.remote_code import (
    ModelOrigin,
    RemoteCodeDecision,
    code_files,
    copy_code_files,
    decide_remote_code,
    is_allowlisted,
    scope_allowlist,
)

__all__ = [
    "CHATML_TOKENS",
    "PICKLE_SUFFIXES",
    "GenerationPrep",
    "LoadedModel",
    "ModelOrigin",
    "RemoteCodeDecision",
    "WeightFiles",
    "causal_lm_class",
    "chat_template",
    "chatml",
    "chatml_training",
    "check_model_dir",
    "code_files",
    "copy_code_files",
    "decide_remote_code",
    "inference_dtype",
    "is_allowlisted",
    "load_model_and_tokenizer",
    "load_weights",
    "resolve_device",
    "scope_allowlist",
    "weight_files",
]
