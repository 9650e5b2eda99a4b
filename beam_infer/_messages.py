"""Bounded message text: errors, dead letters and log lines never carry unbounded content.

TensorFlow's error text can hold whole tensors (one ``InvalidArgumentError`` held a full
serialized Example), and messages about an element quote part of it. Every message
beam_infer builds from such text goes through ``bounded``:

* a piece of foreign text (a TensorFlow error, an element preview) is cut to
  ``MAX_DETAIL_CHARS`` characters;
* a whole message (``DeadLetter.message``, ``InferenceError``, ``ModelLoadError``) is cut
  to ``MAX_MESSAGE_CHARS`` characters.

What is cut is replaced by a note saying how many characters went, so a reader knows
the text is incomplete; a ``DeadLetter`` keeps the element itself, so nothing is lost.
"""

from __future__ import annotations

MAX_MESSAGE_CHARS = 2000
MAX_DETAIL_CHARS = 500


def bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` if it has at most ``limit`` characters, else its start and a cut note.

    Example:
        >>> bounded("x" * 40, limit=30)
        'xxxxxxxxx… [31 characters cut]'
    """
    if len(text) <= limit:
        return text
    keep = limit
    while keep > 0 and keep + len(_note(len(text) - keep)) > limit:
        keep -= 1
    return text[:keep] + _note(len(text) - keep)


def _note(cut: int) -> str:
    return f"… [{cut:,} characters cut]"


def detail(text: str) -> str:
    """Foreign text (an error's, an element's) as it may appear inside a message."""
    return bounded(" ".join(text.split()), MAX_DETAIL_CHARS)


def first_line(error: BaseException) -> str:
    """The first line of an error's text, bounded; its type name if it has no text."""
    text = str(error).strip()
    return detail(text.splitlines()[0]) if text else type(error).__name__
