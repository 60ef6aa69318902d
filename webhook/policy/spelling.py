"""The keys a policy author may write at each place, and a hint for one misspelt.

A key nobody reads is refused rather than ignored: `alow: true` must not quietly leave a
rule without its effect, nor `maxx: 2` a limit without its bound.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def unknown_keys(mapping: Iterable[object], allowed: tuple[str, ...]) -> str | None:
    """What is wrong with the first key of `mapping` not in `allowed`; None if none is."""
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return f"unknown key {key!r}{hint}; allowed: {', '.join(allowed)}"
    return None
