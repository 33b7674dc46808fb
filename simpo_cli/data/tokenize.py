"""Turn normalised pairs into token ids, with the paper's masking and truncation rules."""

from __future__ import annotations

from dataclasses import dataclass

TEMPLATE_MODES = ("auto", "always", "never")


def uses_template(tokenizer, mode: str) -> bool:
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


@dataclass
class PairTokens:
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    prompt_truncated: bool = False
    response_truncated: bool = False


def encode_pair(pair: dict, tokenizer, template: bool) -> PairTokens:
    """Token ids of prompt, chosen and rejected, before truncation.

    With a chat template: the prompt is the history rendered with the generation prompt; each
    response is the rest of the rendered conversation (so it carries the template's end-of-turn
    token). Without one (TRL CPOTrainer's convention): tokens(prompt) with BOS, then
    tokens(response) without special tokens, then EOS.
    """
    if template:
        prompt_text = tokenizer.apply_chat_template(pair["prompt"], tokenize=False,
                                                    add_generation_prompt=True)
        responses = []
        for key in ("chosen", "rejected"):
            full = tokenizer.apply_chat_template(
                pair["prompt"] + [{"role": "assistant", "content": pair[key]}], tokenize=False
            )
            if not full.startswith(prompt_text):
                raise ValueError("the chat template does not render the prompt as a prefix of the "
                                 "conversation; set data.chat_template=never or model.chat_template")
            responses.append(tokenizer(full[len(prompt_text):], add_special_tokens=False).input_ids)
        prompt = tokenizer(prompt_text, add_special_tokens=False).input_ids
        return PairTokens(prompt, responses[0], responses[1])
    prompt = tokenizer(plain_prompt(pair["prompt"]), add_special_tokens=False).input_ids
    if tokenizer.bos_token_id is not None and (not prompt or prompt[0] != tokenizer.bos_token_id):
        prompt = [tokenizer.bos_token_id] + prompt
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    chosen = tokenizer(pair["chosen"], add_special_tokens=False).input_ids + eos
    rejected = tokenizer(pair["rejected"], add_special_tokens=False).input_ids + eos
    return PairTokens(prompt, chosen, rejected)


def truncate(tokens: PairTokens, max_length: int, max_prompt_length: int, bos_id: int | None) -> PairTokens:
    """Fit prompt + response into ``max_length``: first cut the prompt from the left to
    ``max_prompt_length`` (keeping a leading BOS), then cut the responses from the right.
    A response may end up empty; the caller drops such pairs."""
    longest = max(len(tokens.chosen), len(tokens.rejected))
    if len(tokens.prompt) + longest > max_length and len(tokens.prompt) > max_prompt_length:
        keep_bos = bos_id is not None and tokens.prompt[:1] == [bos_id]
        tail = tokens.prompt[len(tokens.prompt) - (max_prompt_length - keep_bos):]
        tokens.prompt = ([bos_id] if keep_bos else []) + tail
        tokens.prompt_truncated = True
    room = max(max_length - len(tokens.prompt), 0)
    if longest > room:
        tokens.chosen, tokens.rejected = tokens.chosen[:room], tokens.rejected[:room]
        tokens.response_truncated = True
    return tokens
