"""The prompt Qwen3-ASR is given, built from the checkpoint's own chat template, and its answer parsed.

Qwen's `qwen-asr` renders `[{"role": "system", "content": context}, {"role": "user", "content":
[{"type": "audio", ...}]}]` with `add_generation_prompt=True` (context "" by default), and to
force a language appends `language <Name><asr_text>` after the assistant header. The model then
writes the transcript; unforced it writes `language <Name><asr_text><transcript>` itself
("language None" for audio without speech). The single `<|audio_pad|>` is expanded to the
encoder's output length. The template is rendered with jinja2 (it comes with torch) in the same
sandbox settings transformers uses (trim_blocks, lstrip_blocks, loop controls).
"""

from __future__ import annotations

import json
from pathlib import Path

from polyasr.errors import CheckpointError, InvalidOptionError
from polyasr.models.checkpoint_io import read_config
from polyasr.models.qwen3_asr.tokenizer import ASR_TEXT, AUDIO_END, AUDIO_PAD, AUDIO_START, IM_END, IM_START

# The languages Qwen3-ASR was trained to transcribe, ISO 639 code -> the name its prompt uses.
LANGUAGES = {
    "ar": "Arabic",
    "yue": "Cantonese",
    "zh": "Chinese",
    "cs": "Czech",
    "da": "Danish",
    "nl": "Dutch",
    "en": "English",
    "fil": "Filipino",
    "fi": "Finnish",
    "fr": "French",
    "de": "German",
    "el": "Greek",
    "hi": "Hindi",
    "hu": "Hungarian",
    "id": "Indonesian",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "mk": "Macedonian",
    "ms": "Malay",
    "fa": "Persian",
    "pl": "Polish",
    "pt": "Portuguese",
    "ro": "Romanian",
    "ru": "Russian",
    "es": "Spanish",
    "sv": "Swedish",
    "th": "Thai",
    "tr": "Turkish",
    "vi": "Vietnamese",
}
_CODES = {name.lower(): code for code, name in LANGUAGES.items()}

# What Qwen's template renders for the request above, for a checkpoint without a template.
DEFAULT_PROMPT = (
    f"{IM_START}system\n{IM_END}\n{IM_START}user\n{AUDIO_START}{AUDIO_PAD}{AUDIO_END}{IM_END}\n{IM_START}assistant\n"
)


def language_name(language: str | None, supported: tuple[str, ...] = ()) -> str | None:
    """An ISO code ("ru") or a name ("russian") -> the prompt's name ("Russian"); None stays None."""
    if language is None:
        return None
    key = language.strip().lower()
    name = LANGUAGES.get(key) or (LANGUAGES[_CODES[key]] if key in _CODES else None)
    allowed = {s.lower() for s in supported} or {n.lower() for n in LANGUAGES.values()}
    if name is None or name.lower() not in allowed:
        listed = ", ".join(f"{c} ({n})" for c, n in LANGUAGES.items() if n.lower() in allowed)
        raise InvalidOptionError(
            f"Qwen3-ASR cannot force language {language!r}; use one of: {listed}, "
            "or leave --language out to let the model detect it"
        )
    return name


def language_code(name: str) -> str:
    """The model's language name ("English") -> ISO code ("en"); an unlisted name -> itself, lowercased."""
    return _CODES.get(name.strip().lower(), name.strip().lower())


def load_chat_template(directory: Path) -> str | None:
    """The checkpoint's chat template: chat_template.jinja, chat_template.json or tokenizer_config.json."""
    directory = Path(directory)
    if (directory / "chat_template.jinja").exists():
        return (directory / "chat_template.jinja").read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        path = directory / name
        if path.exists():
            template = read_config(path).get("chat_template")
            if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
                template = next((t["template"] for t in template if t.get("name") == "default"), None)
            if template:
                return template
    return None


def render_template(template: str, context: str = "") -> str:
    """Render the ASR request with the checkpoint's template, as transformers' apply_chat_template does."""
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise CheckpointError(f"the checkpoint's chat template refused the ASR request: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.globals["raise_exception"] = raise_exception
    env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False, **kw)
    messages = [{"role": "system", "content": context}, {"role": "user", "content": [{"type": "audio", "audio": ""}]}]
    try:
        return env.from_string(template).render(messages=messages, add_generation_prompt=True, tools=None)
    except jinja2.TemplateError as e:
        raise CheckpointError(f"the checkpoint's chat template does not render: {e}") from e


class PromptBuilder:
    """Token ids of the ASR prompt for a given audio length, forced language and context."""

    def __init__(self, tokenizer, template: str | None):
        self.tok, self.template = tokenizer, template
        self.text = render_template(template) if template else DEFAULT_PROMPT
        self._parts = {"": self._split(self.text)}

    def _split(self, text: str) -> tuple[list[int], list[int]]:
        """A rendered prompt -> the ids before and after its one audio placeholder."""
        if text.count(AUDIO_PAD) != 1:
            raise CheckpointError(
                f"the chat template renders {text.count(AUDIO_PAD)} {AUDIO_PAD} tokens for one audio (expected 1)"
            )
        ids = self.tok.encode(text)
        at = ids.index(self.tok.audio_pad)
        return ids[:at], ids[at + 1 :]

    def ids(self, audio_tokens: int, language: str | None = None, context: str = "") -> list[int]:
        """The prompt with `audio_tokens` placeholders; `language` (a prompt name) forces the language;
        `context` is Qwen's system-turn context (hot words, domain text)."""
        if context not in self._parts:
            if self.template is None:
                raise InvalidOptionError("this checkpoint has no chat template, so a context prompt cannot be placed")
            self._parts[context] = self._split(render_template(self.template, context))
        head, tail = self._parts[context]
        forced = self.tok.encode(f"language {language}{ASR_TEXT}") if language else []
        return head + [self.tok.audio_pad] * audio_tokens + tail + forced


def parse_answer(tok, ids, forced: str | None) -> tuple[str, str]:
    """Generated ids (stop token excluded) -> (language name or "", transcript).

    Forced: the whole answer is transcript. Otherwise the model's `language X` before `<asr_text>`
    names the language; `language None` means no speech (usually followed by no text).
    """
    ids = [int(i) for i in ids]
    if forced:
        return forced, fix_repetitions(tok.decode(ids).strip())
    if tok.asr_text not in ids:
        return "", fix_repetitions(tok.decode(ids).strip())
    k = ids.index(tok.asr_text)
    meta, text = tok.decode(ids[:k]).strip(), fix_repetitions(tok.decode(ids[k + 1 :]).strip())
    if "language none" in meta.lower():
        return "", text  # Qwen keeps any text the model still wrote, without a language
    first = next((line.strip() for line in meta.splitlines() if line.strip()), "")
    name = first[len("language ") :].strip() if first.lower().startswith("language ") else ""
    return (name[:1].upper() + name[1:].lower()) if name else "", text


def fix_repetitions(text: str, threshold: int = 20, max_pattern: int = 20) -> str:
    """Qwen's text clean-up: a character repeated more than `threshold` times, and a pattern of up to
    `max_pattern` characters repeated `threshold` or more times in a row, are written once."""
    out, i = [], 0
    while i < len(text):  # runs of one character
        j = i
        while j < len(text) and text[j] == text[i]:
            j += 1
        out.append(text[i] if j - i > threshold else text[i:j])
        i = j
    return _fix_patterns("".join(out), threshold, max_pattern)


def _fix_patterns(s: str, threshold: int, max_pattern: int) -> str:
    for i in range(0, len(s) - 2 * threshold + 1):
        for k in range(1, max_pattern + 1):
            if i + k * threshold > len(s):
                break
            pattern = s[i : i + k]
            if all(s[i + r * k : i + (r + 1) * k] == pattern for r in range(1, threshold)):
                end = i + threshold * k
                while s[end : end + k] == pattern:
                    end += k
                return s[:i] + pattern + _fix_patterns(s[end:], threshold, max_pattern)
    return s
