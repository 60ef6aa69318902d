"""Attacker-written text, made safe and visible for a human deciding on it.

Arguments come from a model. They are escaped (never markup), and every character a
person cannot see or that reorders what they see (bidi controls, zero-width and other
format characters, control characters, unusual spaces) is replaced by a visible marker
naming its code point, so `refund⁠to` and `refund to` never look alike.
"""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup, escape

# Categories a reader cannot see or that change how neighbouring text is displayed.
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
FOLD_AT = 160


def is_hidden(char: str) -> bool:
    """True for characters that must be shown as a marker instead of themselves."""
    category = unicodedata.category(char)
    if category in HIDDEN_CATEGORIES:
        return True
    return category == "Zs" and char != " "  # no-break, em, ideographic... spaces


def code_point(char: str) -> str:
    return f"U+{ord(char):04X}"


def hidden_characters(text: str) -> list[str]:
    """The code points `visible` would mark, in order (for tests and summaries)."""
    return [code_point(c) for c in text if is_hidden(c)]


def visible(value: Any, layout_newlines: bool = False) -> Markup:
    """Escape `value` as text and mark each invisible or reordering character.

    A line feed in a value is marked too (and still breaks the line); with
    `layout_newlines` the line feeds are our own layout (indented JSON) and stay plain.
    """
    text = value if isinstance(value, str) else str(value)
    parts: list[str] = []
    for char in text:
        if char == "\n":
            parts.append(
                "\n"
                if layout_newlines
                else '<span class="hidden-char" title="LINE FEED">U+000A</span>\n'
            )
        elif is_hidden(char):
            name = unicodedata.name(char, "unnamed character")
            parts.append(
                f'<span class="hidden-char" title="{escape(name)}">'
                f"{escape(code_point(char))}</span>"
            )
        else:
            parts.append(str(escape(char)))
    return Markup("".join(parts))


def as_text(value: Any, pretty: bool = False) -> str:
    """An argument value as a person reads it: strings bare, everything else as JSON."""
    if isinstance(value, str):
        return value
    if pretty:
        return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True)
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(", ", ": "))


def folded(value: Any) -> Markup:
    """A value, folded behind a summary when it is long (the full text stays one click away)."""
    text = as_text(value)
    if len(text) <= FOLD_AT and "\n" not in text:
        return Markup('<span class="value">') + visible(text) + Markup("</span>")
    structured = not isinstance(value, str)
    full = as_text(value, pretty=True)
    return (
        Markup('<details class="folded"><summary><span class="value">')
        + visible(text.replace("\n", " ")[:80])
        + Markup("</span> … (")
        + escape(f"{len(text)} characters")
        + Markup(')</summary><pre class="value">')
        + visible(full, layout_newlines=structured)
        + Markup("</pre></details>")
    )


def when(value: float | str | None) -> str:
    """A timestamp (epoch seconds or RFC 3339) as UTC, to the second."""
    if value in (None, "", 0):
        return ""
    if isinstance(value, str):
        return value.replace("T", " ").replace("Z", " UTC")
    return datetime.fromtimestamp(float(value), tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def short_hash(value: str | None, length: int = 12) -> str:
    if not value:
        return ""
    digest = value.split(":", 1)[-1]
    return digest[:length]
