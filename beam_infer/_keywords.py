"""Unknown keyword arguments fail with the names that were meant.

Python's own error for a typo (``TypeError: __init__() got an unexpected keyword argument
'singature_names'``) names neither the class nor what it takes. ``checked_keywords``
wraps a class's ``__init__`` (frozen dataclasses included) or a function so that an
unknown keyword raises ``UnknownArgumentError`` (a ``ConfigurationError`` and a
``TypeError``) saying which keyword, the closest valid names and every name taken::

    ModelSpec got an unknown keyword argument 'singature_names' (did you mean
    'signature_names'?). ModelSpec takes: model_path, signature_names, tags, ...

Only names are checked here; values are checked by the classes themselves.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from beam_infer._errors import UnknownArgumentError

T = TypeVar("T")


def checked_keywords(target: T) -> T:
    """Makes unknown keywords of a class's ``__init__`` (or of a function) an error.

    Apply it outermost, after ``@dataclasses.dataclass``.

    Example:
        >>> @checked_keywords
        ... @dataclasses.dataclass(frozen=True, kw_only=True)
        ... class Config:
        ...     size: int = 1
        >>> Config(sise=2)
        Traceback (most recent call last):
        UnknownArgumentError: Config got an unknown keyword argument 'sise' (did you
        mean 'size'?). Config takes: size.
    """
    if isinstance(target, type):
        init = target.__init__
        accepted = _keyword_names(init, skip_first=True)
        if accepted is None:
            return target
        target.__init__ = _wrap(init, accepted, target.__name__)  # type: ignore[misc]
        return target
    accepted = _keyword_names(target, skip_first=False)
    if accepted is None:
        return target
    return _wrap(target, accepted, getattr(target, "__name__", "function"))  # type: ignore


def _keyword_names(function: Callable[..., Any], *, skip_first: bool) -> tuple[str, ...] | None:
    """The keywords ``function`` takes, or None when it takes any (``**kwargs``)."""
    parameters = list(inspect.signature(function).parameters.values())
    if skip_first:
        parameters = parameters[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return tuple(p.name for p in parameters
                 if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                               inspect.Parameter.KEYWORD_ONLY))


def _wrap(function: Callable[..., Any], accepted: tuple[str, ...], owner: str
          ) -> Callable[..., Any]:
    allowed = frozenset(accepted)

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not allowed.issuperset(kwargs):
            raise UnknownArgumentError(unknown_message(owner, kwargs, accepted))
        return function(*args, **kwargs)

    return wrapper


def unknown_message(owner: str, given: Iterable[str], accepted: tuple[str, ...]) -> str:
    """``X got an unknown keyword argument 'a' (did you mean 'b'?). X takes: ...``."""
    unknown = [name for name in given if name not in accepted]
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, accepted, n=2, cutoff=0.5)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        parts.append(f"{name!r}{hint}")
    noun = "argument" if len(unknown) == 1 else "arguments"
    return (f"{owner} got an unknown keyword {noun} {', '.join(parts)}. "
            f"{owner} takes: {', '.join(accepted) or 'no keywords'}.")
