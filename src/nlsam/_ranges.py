"""Valid ranges of numeric options, declared once where an option is defined and checked from
that declaration: the training config's fields (:mod:`nlsam.engine.config`, which also shows
them in ``nlsam train --help``) and the options of the networks and attention modules.

Every range refuses ``inf`` and ``nan``, and ``bool`` where a number is asked for. Messages
quote a user's value through :func:`short_repr`, never whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Iterable, Optional

#: How many characters of a user's value a message quotes.
SHORT_REPR = 60


def short_repr(value: Any, limit: int = SHORT_REPR) -> str:
    """``repr(value)`` cut to ``limit`` characters (``...`` and the full length after a cut).

    A value read from a file or a flag can be megabytes long (a list of a million stages); an
    error message quotes this instead. Containers are walked only as far as the cut needs.
    """
    text = _bounded_repr(value, limit + 1)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 3]}... ({_kind(value)})"


def _kind(value: Any) -> str:
    try:
        size = len(value)
    except TypeError:
        return type(value).__name__
    unit = "characters" if isinstance(value, str) else "items"
    return f"{type(value).__name__} of {size:,} {unit}"


def _bounded_repr(value: Any, budget: int, _depth: int = 0) -> str:
    """A repr that stops once ``budget`` characters are written (a prefix of the full repr, or
    the full repr when it is shorter)."""
    if _depth > 20:
        return "..."
    # the built-in containers only, and not an empty set (``set()``): a subclass (a named tuple,
    # an OrderedDict) writes its own repr, which a walk would not match
    if type(value) in (list, tuple, dict, set, frozenset) and (value or type(value) not in (set, frozenset)):
        items: Iterable[Any]
        if isinstance(value, dict):
            items = value.items()
            opening, closing = "{", "}"
        elif isinstance(value, list):
            items, opening, closing = value, "[", "]"
        elif isinstance(value, tuple):
            items, opening, closing = value, "(", ",)" if len(value) == 1 else ")"
        elif isinstance(value, frozenset):
            items, opening, closing = value, "frozenset({", "})"
        else:
            items, opening, closing = value, "{", "}"
        parts = [opening]
        length = len(opening)
        for index, item in enumerate(items):
            if length > budget:
                break
            if isinstance(value, dict):
                key, val = item
                piece = (
                    _bounded_repr(key, budget - length, _depth + 1)
                    + ": "
                    + _bounded_repr(val, budget - length, _depth + 1)
                )
            else:
                piece = _bounded_repr(item, budget - length, _depth + 1)
            piece = (", " if index else "") + piece
            parts.append(piece)
            length += len(piece)
        parts.append(closing)
        return "".join(parts)
    if isinstance(value, str) and len(value) > budget:
        return repr(value[:budget])
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 4 * budget:
        # str() of a huge int is slow (and refused past 4300 digits): say how large it is instead
        return f"<an integer of about {int(value.bit_length() * 0.30103):,} digits>"
    text = repr(value)
    return text[: budget + 1]


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric option.

    Attributes:
        low, high: the bounds (``None``: unbounded on that side).
        low_open, high_open: whether the bound itself is excluded (``(0, 1]``: ``low_open``).
        integer: only integers (``bool`` excluded); otherwise any real number (ints too).
        why: what the values mean, said when a value is refused (``"0: no pooling"``).
        why_high: why there is an upper bound at all, said when a value is over it.
    """

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    why: str = ""
    why_high: str = ""

    def text(self) -> str:
        """The range as people write it: ``1..10000``, ``> 0``, ``[0, 1)``, ``(0, 1]``."""
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            if self.integer and not self.low_open and not self.high_open:
                return f"{low}..{high}"
            return f"{'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {high}"
        return "any finite number"

    def kind(self) -> str:
        return "an integer" if self.integer else "a finite number"

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.integer:
            if not isinstance(value, Integral):
                return False
        elif not isinstance(value, Real) or not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return False
        return True

    def check(self, name: str, value: Any) -> Any:
        """Return ``value`` if it is in the range, else raise one ``ValueError`` naming ``name``,
        the range and (cut short) the value."""
        if not self.contains(value):
            raise ValueError(self.message(name, value))
        return value

    def message(self, name: str, value: Any) -> str:
        reasons = [self.why] if self.why else []
        if self.why_high and self.high is not None and _above(value, self.high):
            reasons.append(self.why_high)
        why = f" ({'; '.join(reasons)})" if reasons else ""
        where = "in " if self.low is not None and self.high is not None else ""
        return f"{name} must be {self.kind()} {where}{self.text()}{why}, got {short_repr(value)}"


def _above(value: Any, high: float) -> bool:
    try:
        return not isinstance(value, bool) and value > high
    except TypeError:
        return False


def _number(value: Optional[float]) -> str:
    if value is None:
        return ""
    if float(value).is_integer() and abs(value) >= 100_000:
        return f"{int(value):_}".replace("_", ",")
    return f"{value:g}" if isinstance(value, float) else str(value)


def check_model_argument(model: Any, caller: str) -> None:
    """Raise a ``TypeError`` unless ``model`` is an ``nn.Module``; for a model's name, say how to
    build it (``insert`` and ``profile`` work on a network, as timm's functions do)."""
    from torch import nn

    if isinstance(model, nn.Module):
        return
    if isinstance(model, str):
        name = model if len(model) <= 60 else model[:57] + "..."
        raise TypeError(
            f"{caller}: model must be a torch.nn.Module, got the name {name!r}; build the network "
            f"first and pass it: model = nlsam.create_model({name!r}) (or a torchvision / timm "
            f"model), then {caller}(model, ...)"
        )
    raise TypeError(f"{caller}: model must be a torch.nn.Module (a network), got {type(model).__name__}")
