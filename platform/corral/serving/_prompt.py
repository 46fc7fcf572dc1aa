"""Turn OpenAI messages and prompts into token ids with the model's own chat template."""

from __future__ import annotations

from typing import Any

from corral.serving._errors import InvalidRequestError

__all__ = ["Prompter"]


class Prompter:
    """Apply the chat template the model was trained with and tokenize.

    Args:
        tokenizer: A transformers tokenizer; its ``chat_template`` is used for chats.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._longest: int | None = None

    def longest_token_chars(self) -> int:
        """Characters in the vocabulary's longest token (an upper bound of text per token)."""
        if self._longest is None:
            vocab = self.tokenizer.get_vocab()
            self._longest = max((len(token) for token in vocab), default=1)
        return self._longest

    def chat(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of ``messages`` followed by the assistant's generation prompt.

        Raises:
            InvalidRequestError: The model has no chat template (use ``/v1/completions``).
        """
        if not getattr(self.tokenizer, "chat_template", None):
            raise InvalidRequestError(
                "this model has no chat template; use /v1/completions or set chatTemplate on the Model",
                param="messages",
            )
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self._encode(str(text))

    def completion(self, prompt: str) -> list[int]:
        """Token ids of a raw prompt (with the tokenizer's BOS token when it adds one)."""
        bos = self.tokenizer.bos_token or ""
        return self._encode(prompt if prompt.startswith(bos) else bos + prompt)

    def _encode(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return [int(i) for i in ids]
