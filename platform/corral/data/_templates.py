r"""Chat templates: the tokenizer's own, or a named one shipped with Corral.

The named templates (``templates/<name>.jinja``) write the prompt formats of the projects
they are named after, with their real marker strings:

=========== ================================================================================
``llama-2``  ``<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s>``
``llama-3``  ``<|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>``
``vicuna``   ``{system} USER: {user} ASSISTANT: {assistant}</s>`` (FastChat ``vicuna_v1.1``)
``alpaca``   ``{preamble}\n\n### Instruction:\n{user}\n\n### Response:\n{assistant}</s>`` (Stanford Alpaca)
``chatml``   ``<|im_start|>{role}\n{content}<|im_end|>\n``
``chatglm``  ``[gMASK]sop[Round 1]\n\n{Q}{user}\n\n{A}{assistant}</s>`` (ChatGLM2; Q/A are its Chinese markers)
=========== ================================================================================

``bos_token``/``eos_token`` come from the tokenizer. The template used in training is
written into the output model as ``tokenizer.chat_template`` (:func:`install_template`),
so serving formats prompts exactly as training did.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path
from typing import Any

from corral.data._formats import Message

__all__ = [
    "TEMPLATE_NAMES",
    "TemplateError",
    "get_template",
    "install_template",
    "missing_special_tokens",
    "render",
]

logger = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
TEMPLATE_NAMES = ("llama-2", "llama-3", "vicuna", "alpaca", "chatml", "chatglm")

#: Marker strings that should be single (special) tokens of a tokenizer used with a template.
_MARKERS: dict[str, tuple[str, ...]] = {
    "llama-2": (),
    "llama-3": ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    "vicuna": (),
    "alpaca": (),
    "chatml": ("<|im_start|>", "<|im_end|>"),
    "chatglm": ("[gMASK]", "sop"),
}


class TemplateError(ValueError):
    """A chat template is unknown, missing, or cannot be used for loss masking."""


@cache
def _read(name: str) -> str:
    return (TEMPLATE_DIR / f"{name}.jinja").read_text(encoding="utf-8")


def get_template(name: str | None, tokenizer: Any = None) -> str:
    """Return the Jinja source of a chat template.

    Args:
        name: One of :data:`TEMPLATE_NAMES`, or ``"auto"``/``None`` for the tokenizer's own
            ``chat_template``.
        tokenizer: The tokenizer (needed for ``auto``).

    Returns:
        The template source.

    Raises:
        TemplateError: Unknown name, or ``auto`` with a tokenizer that has no template.
    """
    if name in (None, "auto"):
        template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
        if isinstance(template, dict):  # several named templates: use the default one
            template = template.get("default")
        if not isinstance(template, str) or not template:
            raise TemplateError(
                "the tokenizer has no chat template; name one of: " + ", ".join(TEMPLATE_NAMES)
            )
        return template
    if name not in TEMPLATE_NAMES:
        raise TemplateError(f"unknown chat template {name!r}; allowed: auto, {', '.join(TEMPLATE_NAMES)}")
    return _read(name)


def missing_special_tokens(name: str, tokenizer: Any) -> list[str]:
    """Marker strings of template ``name`` that ``tokenizer`` would split into several tokens.

    Training still works with such a tokenizer (the markers are ordinary text), but the
    model spends capacity learning them; add them as special tokens to avoid it.

    Args:
        name: A template name from :data:`TEMPLATE_NAMES`.
        tokenizer: A Hugging Face tokenizer.

    Returns:
        The markers that do not encode to exactly one token.
    """
    missing = []
    for marker in _MARKERS.get(name, ()):
        if len(tokenizer(marker, add_special_tokens=False)["input_ids"]) != 1:
            missing.append(marker)
    return missing


def install_template(tokenizer: Any, name: str | None) -> str:
    """Resolve ``name`` and record it as ``tokenizer.chat_template`` (saved with the model).

    Args:
        tokenizer: The tokenizer that ``save_pretrained`` will write into the output model.
        name: A template name or ``auto``.

    Returns:
        The template source now set on the tokenizer.
    """
    template = get_template(name, tokenizer)
    if name not in (None, "auto"):
        missing = missing_special_tokens(name, tokenizer)
        if missing:
            logger.warning("chat template %s: markers %s are not single tokens of this tokenizer", name, missing)
    tokenizer.chat_template = template
    return template


def render(
    messages: tuple[Message, ...] | list[Message], tokenizer: Any, template: str, *, add_generation_prompt: bool = False
) -> str:
    """Render ``messages`` with ``template`` as text (special tokens come from ``tokenizer``).

    Args:
        messages: The turns.
        tokenizer: A Hugging Face tokenizer (its ``bos_token``/``eos_token`` fill the template).
        template: Jinja source, e.g. from :func:`get_template`.
        add_generation_prompt: Append the header that starts an assistant turn.

    Returns:
        The rendered text.

    Raises:
        TemplateError: The template raised (for example, roles that do not alternate).
    """
    conversation = [{"role": m.role, "content": m.content} for m in messages]
    try:
        text = tokenizer.apply_chat_template(
            conversation, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except Exception as exc:  # jinja2 TemplateError and raise_exception(...) from the template
        raise TemplateError(f"the chat template failed: {exc}") from exc
    return str(text)
