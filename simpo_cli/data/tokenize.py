"""Turn normalised pairs into token ids, with the paper's masking and truncation rules."""

from __future__ import annotations

from dataclasses import dataclass

from simpo_cli.data.templates import prompt_ids, prompt_text, response_ids


@dataclass
class PairTokens:
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    prompt_truncated: bool = False
    response_truncated: bool = False


def encode_pair(pair: dict, tokenizer, template: bool) -> PairTokens:
    """Token ids of prompt, chosen and rejected, before truncation (``simpo_cli.data.templates``).

    With a chat template: the prompt is the history rendered with the generation prompt; each
    response is the rest of the rendered conversation up to and including the template's
    end-of-turn (EOS) token. Without one (TRL CPOTrainer's convention): tokens(prompt) with BOS,
    then tokens(response) without special tokens, then EOS. Raises ``ValueError`` when the
    template does not render the prompt as a prefix of the conversation.
    """
    rendered = prompt_text(pair["prompt"], tokenizer, template)
    return PairTokens(prompt_ids(pair["prompt"], tokenizer, template),
                      response_ids(pair["prompt"], pair["chosen"], tokenizer, template, rendered),
                      response_ids(pair["prompt"], pair["rejected"], tokenizer, template, rendered))


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
