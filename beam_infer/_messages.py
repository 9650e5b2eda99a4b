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


def sentence(error: BaseException) -> str:
    """An error's first line (bounded), ending with one full stop."""
    return first_line(error).rstrip(". ") + "."


def type_name(value: object) -> str:
    """``module.Qualname`` of ``value``'s type; builtins by their plain name."""
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" \
        else f"{kind.__module__}.{kind.__qualname__}"


def path_gone(path: str) -> str:
    """Why a model that existed when the pipeline was built cannot be loaded now."""
    return (f"model path {path!r} no longer exists on this worker; it held a SavedModel "
            "when the pipeline was built. Restore it, or point ModelSpec(model_path=...) at "
            "a path that stays in place while the job runs.")


def tf_message(error: BaseException) -> str:
    """The useful lines of a TensorFlow error, bounded: no stack-trace banner, no node names.

    TensorFlow's text may quote whole tensors, so it is cut to ``MAX_DETAIL_CHARS``.
    """
    import tensorflow as tf  # the library has it loaded; kept out of this light module's import

    text = error.message if isinstance(error, tf.errors.OpError) else str(error)
    kept = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("Graph execution error", "Detected at node",
                                                "<stack traces unavailable>", "[[", "[Op:")):
            continue
        if stripped.startswith("{{function_node"):
            stripped = stripped.split("}}", 1)[-1].strip()
        kept.append(stripped)
    return detail(" ".join(kept)) or type(error).__name__


def preview(element: object, limit: int = 80) -> str:
    """The start of ``repr(element)`` for a message (the element itself is kept elsewhere)."""
    text = repr(element)
    return text if len(text) <= limit else text[: limit - 3] + "..."
