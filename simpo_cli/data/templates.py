"""The one prompt renderer: how a conversation becomes prompt (and response) token ids.

Training (``data/tokenize.encode_pair``), sampling for ``simpo generate-pairs``
(``models/generate.encode_prompt``) and benchmark answering (``evaluation/benchmarks``) all call
``prompt_ids``, so a model is asked exactly the way it was trained.

With a chat template (``template=True``): the tokenizer's own template with the generation prompt,
tokenised *without* special tokens, so the start-of-text token appears exactly as often as the
template writes it (Llama-3 and Zephyr write ``bos_token`` themselves; ChatML writes none) and
never twice. Without one (TRL CPOTrainer's convention): ``plain_prompt`` text after one BOS id.
"""

from __future__ import annotations

TEMPLATE_MODES = ("auto", "always", "never")


def uses_template(tokenizer, mode: str) -> bool:
    """Whether ``data.chat_template`` (``auto | always | never``) renders with the chat template."""
    if mode not in TEMPLATE_MODES:
        raise ValueError(f"data.chat_template must be one of {TEMPLATE_MODES}, got '{mode}'")
    has = bool(getattr(tokenizer, "chat_template", None))
    return has if mode == "auto" else mode == "always"


def plain_prompt(messages: list[dict]) -> str:
    """A prompt for a tokenizer without a chat template: a lone user turn is used verbatim;
    longer histories are written as "Role: text" paragraphs ending with "Assistant:"."""
    if len(messages) == 1:
        return messages[0]["content"]
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(lines) + "\n\nAssistant:"


def prompt_text(messages: list[dict], tokenizer, template: bool) -> str:
    """The prompt as text, without a BOS the template does not write itself (``prompt_ids`` adds
    the plain convention's BOS as an id, not as text that might not tokenise back to it)."""
    if template:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return plain_prompt(messages)


def prompt_ids(messages: list[dict], tokenizer, template: bool) -> list[int]:
    """Token ids of the prompt for ``messages`` (the last one the user's)."""
    ids = tokenizer(prompt_text(messages, tokenizer, template), add_special_tokens=False).input_ids
    if not template and tokenizer.bos_token_id is not None and (not ids or ids[0] != tokenizer.bos_token_id):
        ids = [tokenizer.bos_token_id] + ids
    return ids


def response_ids(messages: list[dict], response: str, tokenizer, template: bool,
                 rendered_prompt: str | None = None) -> list[int]:
    """Token ids of ``response`` as the assistant's answer to ``messages``, ending with the
    end-of-turn token, which is scored like any response token.

    With a chat template: the rendered conversation minus the rendered prompt, cut after the last
    EOS token the template writes (ChatML's ``<|im_end|>`` is followed by a newline the model never
    generates: it stops at ``<|im_end|>``). Raises ``ValueError`` when the template does not
    render the prompt as a prefix of the conversation. Without one: tokens(response) + EOS.
    """
    if not template:
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        return tokenizer(response, add_special_tokens=False).input_ids + eos
    prefix = rendered_prompt if rendered_prompt is not None else prompt_text(messages, tokenizer, True)
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=False)
    if not full.startswith(prefix):
        raise ValueError("the chat template does not render the prompt as a prefix of the "
                         "conversation; set data.chat_template=never or model.chat_template")
    text = full[len(prefix):]
    eos = tokenizer.eos_token
    if eos and eos in text:
        text = text[: text.rindex(eos) + len(eos)]
    return tokenizer(text, add_special_tokens=False).input_ids
