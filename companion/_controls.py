"""The controls of an experiment: :class:`Slider` and :class:`Choice`, and the checks
that an experiment's controls and its ``draw`` fit together.

Controls are *discrete* (a slider walks a list of values), so that the live reader
and the static book show exactly the same frames. Import them from
:mod:`companion.explore`.
"""
from __future__ import annotations

import html
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from . import _check

def _fmt(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    return str(value)


@dataclass(frozen=True)
class Slider:
    """A numeric control that walks a list of values.

    Args:
        values: the values, in slider order (e.g. ``[1, 2, 5, 10, 20, 50]`` or
            ``np.geomspace(0.1, 10, 9)``): a non-empty list, tuple, range or 1-D array of
            finite real numbers, no value twice.
        value: the initial value; must be one of ``values`` (default: the middle one).
        label: text shown beside the control (default: the parameter's name).
        marks: ``{value: text}`` reference points named under the slider, e.g.
            ``{0.5: "2/λ_max"}`` (a value may lie outside the slider's range).

    Raises:
        TypeError: ``values`` not a list/tuple/range/1-D array (a str included), a value,
            ``value`` or mark that is not a real number, a ``label`` or mark text that is
            not a str, ``marks`` not a dict.
        ValueError: no values, a value twice, a NaN or infinite value or mark, ``value``
            not among ``values``.
    """

    values: Sequence[float]
    value: float | None = None
    label: str | None = None
    marks: Mapping[float, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        values = self.values
        if isinstance(values, np.ndarray):
            if values.ndim != 1:
                raise ValueError(f"values must be a 1-D array of numbers, got {_check.show(values)}")
            items = list(values)
            if not items:
                raise ValueError(f"values must not be empty, got {_check.show(values)}")
        else:
            items = _check.sequence("values", values,
                                    what="a list, tuple or 1-D array of numbers")
        numbers = [_check.real(f"values[{i}]", v) for i, v in enumerate(items)]
        _no_repeats("values", [repr(v) for v in numbers], items)
        if self.value is not None:
            _check.real("value", self.value)
            if _index_of(items, self.value) is None:
                raise ValueError(f"value must be one of {_shown(items)}, got {self.value!r}")
        optional_text("label", self.label)
        _check.mapping("marks", self.marks, nonempty=False)
        for at, text in self.marks.items():
            _check.real("marks key", at)
            _check.string(f"marks[{at!r}]", text)

    def items(self) -> list[tuple[str, Any]]:
        return [(_fmt(v), v.item() if isinstance(v, np.generic) else v) for v in self.values]

    def default_index(self, name: str) -> int:
        """The index of the initial value among ``values``.

        Raises:
            TypeError: ``name`` (the control's name, for messages) not a str.
        """
        _check.string("name", name)
        return _default_index(name, self.values, self.value, len(self.values) // 2)


@dataclass(frozen=True)
class Choice:
    """A control that picks one of several options.

    Args:
        options: a non-empty list or tuple of values (shown with ``str``; no two with
            the same text), or a non-empty ``{label: value}`` dict with str labels.
        value: the initial value (default: the first option); must be one of the options'
            values.
        label: text shown beside the control (default: the parameter's name).

    Raises:
        TypeError: ``options`` neither a list/tuple nor a dict (a str included: it is
            not a list of its letters), a dict label or ``label`` that is not a str.
        ValueError: no options, two options shown the same, ``value`` not an option.
    """

    options: Sequence[Any] | Mapping[str, Any]
    value: Any = None
    label: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.options, Mapping):
            _check.mapping("options", self.options)
            for key in self.options:
                _check.string("options key", key)
        else:
            items = _check.sequence("options", self.options,
                                    what="a list or tuple of options, or a dict label -> value")
            _no_repeats("options", [str(v) for v in items], items)
        values = [v for _, v in self.items()]
        if self.value is not None and _index_of(values, self.value) is None:
            raise ValueError(f"value must be one of the options {_shown(values)}, got {self.value!r}")
        optional_text("label", self.label)

    def items(self) -> list[tuple[str, Any]]:
        if isinstance(self.options, Mapping):
            return [(str(k), v) for k, v in self.options.items()]
        return [(str(v), v) for v in self.options]

    def default_index(self, name: str) -> int:
        """The index of the initial value among the options.

        Raises:
            TypeError: ``name`` (the control's name, for messages) not a str.
        """
        _check.string("name", name)
        return _default_index(name, [v for _, v in self.items()], self.value, 0)


def optional_text(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise _check._type_error(name, "a str or None", value)


def _shown(values: Sequence[Any]) -> str:
    return _check.show([v.item() if isinstance(v, np.generic) else v for v in values])


def _no_repeats(name: str, keys: list[str], items: list[Any]) -> None:
    """Refuse two entries with the same key (the reader could not tell them apart)."""
    seen: set[str] = set()
    for label, item in zip(keys, items):
        if label in seen:
            raise ValueError(f"{name} must not repeat an entry, got {item!r} twice")
        seen.add(label)


def _same(v: Any, value: Any) -> bool:
    if v is value:
        return True
    if _check._is_real(v) and _check._is_real(value):
        return bool(v == value) or bool(np.isclose(float(v), float(value)))
    try:
        return bool(v == value)
    except Exception:  # an array option compared element-wise: not the same object
        return False


def _index_of(values: Sequence[Any], value: Any) -> int | None:
    for i, v in enumerate(values):
        if _same(v, value):
            return i
    return None


def _default_index(name: str, values: Sequence[Any], value: Any, fallback: int) -> int:
    if value is None:
        return fallback
    i = _index_of(values, value)
    if i is None:
        raise ValueError(f"control {name!r}: value must be one of {list(values)}, got {value!r}")
    return i


def check_controls(controls: Any) -> dict:
    controls = _check.mapping("controls", controls)
    for name, control in controls.items():
        _check.string("controls key", name, nonempty=True)
        if not isinstance(control, (Slider, Choice)):
            raise _check._type_error(f"controls[{name!r}]", "a Slider or a Choice", control)
        control.default_index(name)
    return dict(controls)


def check_draw(draw: Callable[..., Any], names: list[str]) -> bool:
    """Refuse a ``draw`` that ``draw(fig, **params)`` cannot call with exactly the controls'
    names; True if it takes ``progress``. A callable without a signature is not checked."""
    try:
        signature = inspect.signature(draw)
    except (TypeError, ValueError):
        return False
    P = inspect.Parameter
    params = list(signature.parameters.values())
    positional = [p for p in params if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD,
                                                   P.VAR_POSITIONAL)]
    if not positional:
        raise ValueError(f"draw must take the figure as its first argument, "
                         f"draw{signature} takes none")
    accepts_progress = "progress" in signature.parameters
    if accepts_progress and "progress" in names:
        raise ValueError("controls must not have a control named 'progress': draw takes "
                         "progress as its progress callback")
    kwargs = dict.fromkeys(names)
    if accepts_progress:
        kwargs["progress"] = None
    try:
        signature.bind(None, **kwargs)
    except TypeError:
        rest = [p for p in params if p is not positional[0]]
        takes = [p.name for p in rest
                 if p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY) and p.name != "progress"]
        required = [p.name for p in rest if p.default is P.empty
                    and p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY, P.POSITIONAL_ONLY)
                    and p.name != "progress"]
        any_name = any(p.kind is P.VAR_KEYWORD for p in params)
        unknown = [] if any_name else [n for n in names if n not in takes]
        missing = [n for n in required if n not in names]
        detail = "; ".join(part for part in (
            f"controls draw does not take: {unknown}" if unknown else "",
            f"parameters of draw that no control sets: {missing}" if missing else "") if part)
        raise ValueError(f"draw must take the controls' names as keyword arguments, "
                         f"draw(fig, **params): draw{signature} takes {takes}, the controls "
                         f"are {names}"
                         + (f" ({detail})" if detail else "")) from None
    return accepts_progress


def marks_html(control: Slider) -> str:
    if not control.marks:
        return ""
    lo, hi = float(min(control.values)), float(max(control.values))
    items = []
    for value, text in control.marks.items():
        where = "within" if lo <= value <= hi else "outside"
        items.append(f"{html.escape(text)} = {_fmt(value)} ({where} the slider's range)")
    return f'<span class="cx-marks">▲ {"; ".join(items)}</span>'
