"""The Ollama prompt template and stop tokens that match the chat template an adapter was trained with.

An adapter only behaves as trained if the deployed model sees prompts laid out byte for byte like the
training data. Rather than keep a table of known families, this renders the adapter's own Jinja chat template
(the way transformers does) on conversations of marker strings, cuts the text around the markers into
per-role pieces (what comes before and after a system, user or assistant message, the generation prompt),
checks that those pieces reproduce the template's rendering of several other conversations exactly, and only
then writes them out as an Ollama (Go) template. A template that is not this regular is refused with a clear
error (``registry.ollama.template`` in the config then takes a hand-written one).

The BOS token is left out: llama.cpp adds it itself when the model's tokenizer asks for one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from schemas.errors import Refused

SYSTEM, USER, ASSISTANT = "system", "user", "assistant"


class TemplateError(Refused, ValueError):
    """The chat template cannot be expressed as an Ollama template."""


@dataclass(frozen=True)
class Pieces:
    """The text around each message, as the chat template lays it out."""

    prefix: str            # before the first message when it is not a system message (a default system block)
    system_start: str
    system_end: str
    user_start: str
    user_end: str
    assistant_start: str
    assistant_end: str     # left out after the last message: the model is to continue from there
    generation: str        # after the last user message: the assistant header the model completes
    system_supported: bool  # False: the template refuses system messages; they are sent as user turns


@dataclass(frozen=True)
class OllamaPrompt:
    template: str
    stop: list[str]


def render(chat_template: str, messages: list[dict], *, add_generation_prompt: bool, bos_token: str = "",
           eos_token: str = "") -> str:
    """Render like ``tokenizer.apply_chat_template(tokenize=False)``, with the BOS token removed."""
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template([messages], chat_template=chat_template,
                                        add_generation_prompt=add_generation_prompt, bos_token=bos_token,
                                        eos_token=eos_token)
    text = rendered[0]
    return text[len(bos_token):] if bos_token and text.startswith(bos_token) else text


def _marker(role: str, i: int) -> str:
    return f"CHATLAKE{role.upper()}MARKER{i}"


def _conversation(roles: str) -> list[dict]:
    names = {"s": SYSTEM, "u": USER, "a": ASSISTANT}
    return [{"role": names[r], "content": _marker(names[r], i)} for i, r in enumerate(roles)]


def _common_suffix(*texts: str) -> str:
    n = 0
    while all(len(t) > n for t in texts) and len({t[len(t) - n - 1] for t in texts}) == 1:
        n += 1
    return texts[0][len(texts[0]) - n:] if n else ""


def derive_pieces(chat_template: str, *, bos_token: str = "", eos_token: str = "") -> Pieces:
    """Cut the chat template's layout into per-role pieces, verified against its own renderings."""
    def run(roles: str, gen: bool) -> str:
        return render(chat_template, _conversation(roles), add_generation_prompt=gen, bos_token=bos_token,
                      eos_token=eos_token)

    def positions(text: str, roles: str) -> list[int]:
        found, at = [], 0
        for i, r in enumerate(roles):
            marker = _marker({"s": SYSTEM, "u": USER, "a": ASSISTANT}[r], i)
            at = text.find(marker, at)
            if at < 0:
                raise TemplateError(f"the chat template drops or reorders {marker.split('MARKER')[0][8:].lower()} "
                                    "messages; set registry.ollama.template by hand")
            found.append(at)
            at += len(marker)
        return found

    try:
        plain = run("uau", True)
        # Some templates end a prompt without a generation header with the EOS token (Phi-3).
        no_gen = run("uau", False)
    except Exception as exc:  # a template raising on a plain conversation is broken; say so in one line
        raise TemplateError(f"the chat template does not render a plain conversation: {exc}") from None
    if eos_token and not plain.startswith(no_gen) and no_gen.endswith(eos_token):
        no_gen = no_gen[:-len(eos_token)]
    if not plain.startswith(no_gen):
        raise TemplateError("the chat template's generation prompt is not a plain suffix; "
                            "set registry.ollama.template by hand")
    u1, a1, u2 = positions(plain, "uau")
    prefix_and_user = plain[:u1]
    user_to_assistant = plain[u1 + len(_marker(USER, 0)):a1]
    assistant_to_user = plain[a1 + len(_marker(ASSISTANT, 1)):u2]
    user_end = no_gen[u2 + len(_marker(USER, 2)):]
    generation = plain[len(no_gen):]
    if not user_to_assistant.startswith(user_end):
        raise TemplateError("the chat template ends user turns differently before a reply; "
                            "set registry.ollama.template by hand")
    try:
        with_system = run("suau", True)
    except Exception:  # e.g. Gemma: raise_exception('System role not supported')
        with_system = None
    tails = [prefix_and_user, assistant_to_user]
    if with_system is not None:
        s0, u1s = positions(with_system, "suau")[:2]
        system_start = with_system[:s0]
        system_to_user = with_system[s0 + len(_marker(SYSTEM, 0)):u1s]
        tails.append(system_to_user)
    # What precedes every user message is the user header, plus whatever ends the turn before it; when that
    # is how user turns end too, it is the turn end, and it belongs to the previous message.
    before_user = _common_suffix(*tails)
    user_start = before_user[len(user_end):] if user_end and before_user.startswith(user_end) else before_user

    def cut(text: str) -> str:
        return text[:len(text) - len(user_start)]

    pieces = Pieces(
        prefix=cut(prefix_and_user),
        system_start=system_start if with_system is not None else "",
        system_end=cut(system_to_user) if with_system is not None else "",
        user_start=user_start, user_end=user_end,
        assistant_start=user_to_assistant[len(user_end):],
        assistant_end=cut(assistant_to_user),
        generation=generation, system_supported=with_system is not None)
    for roles in ("u", "uau", "uauau") + (("su", "suau", "suauau") if with_system is not None else ()):
        if layout(pieces, _conversation(roles)) != run(roles, True):
            raise TemplateError("the chat template is not a plain per-message layout (it changes with the "
                                "conversation); set registry.ollama.template by hand")
    return pieces


def layout(pieces: Pieces, messages: list[dict]) -> str:
    """The prompt the Ollama template built from ``pieces`` produces (the check that the pieces are right)."""
    out = []
    if not (pieces.system_supported and messages and messages[0]["role"] == SYSTEM):
        out.append(pieces.prefix)
    for i, m in enumerate(messages):
        last = i == len(messages) - 1
        role = USER if m["role"] == SYSTEM and not pieces.system_supported else m["role"]
        if role == SYSTEM:
            out += [pieces.system_start, m["content"], pieces.system_end]
        elif role == USER:
            out += [pieces.user_start, m["content"], pieces.user_end, pieces.generation if last else ""]
        elif role == ASSISTANT:
            out += [pieces.assistant_start, m["content"], "" if last else pieces.assistant_end]
    return "".join(out)


def _literal(text: str) -> str:
    """Text as it appears in a Go template: verbatim, unless it holds action delimiters."""
    return "{{ " + json.dumps(text) + " }}" if "{{" in text or "}}" in text else text


def go_template(pieces: Pieces) -> str:
    """The Ollama template that lays out ``.Messages`` exactly as ``layout`` does."""
    parts = []
    if pieces.prefix:
        parts.append('{{ if or (eq (len .Messages) 0) (ne (index .Messages 0).Role "system") }}'
                     + _literal(pieces.prefix) + "{{ end }}"
                     if pieces.system_supported else _literal(pieces.prefix))
    parts.append("{{ range $i, $m := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}")
    if pieces.system_supported:
        parts.append('{{ if eq $m.Role "system" }}' + _literal(pieces.system_start) + "{{ $m.Content }}"
                     + _literal(pieces.system_end) + '{{ else if eq $m.Role "user" }}')
    else:
        parts.append('{{ if or (eq $m.Role "user") (eq $m.Role "system") }}')
    parts.append(_literal(pieces.user_start) + "{{ $m.Content }}" + _literal(pieces.user_end)
                 + "{{ if $last }}" + _literal(pieces.generation) + "{{ end }}")
    parts.append('{{ else if eq $m.Role "assistant" }}' + _literal(pieces.assistant_start) + "{{ $m.Content }}"
                 + "{{ if not $last }}" + _literal(pieces.assistant_end) + "{{ end }}")
    parts.append("{{ end }}{{ end }}")
    return "".join(parts)


def stop_sequences(pieces: Pieces, special_tokens: list[str]) -> list[str]:
    """Where a reply ends: the special tokens between a reply and the next turn (``<|eot_id|>``,
    ``<|start_header_id|>``...), else that whole boundary text."""
    boundary = pieces.assistant_end + pieces.user_start
    found = sorted({t for t in special_tokens if t and t in boundary}, key=boundary.index)
    if found:
        return found
    return [boundary.strip()] if boundary.strip() else []


def ollama_prompt(chat_template: str, *, bos_token: str = "", eos_token: str = "",
                  special_tokens: list[str] = ()) -> OllamaPrompt:
    """The Ollama template and stop sequences for an adapter trained with ``chat_template``."""
    pieces = derive_pieces(chat_template, bos_token=bos_token, eos_token=eos_token)
    return OllamaPrompt(template=go_template(pieces), stop=stop_sequences(pieces, list(special_tokens)))
