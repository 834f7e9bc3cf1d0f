"""Checks for the tutorials' exercises: each tells a learner whether an answer is right.

Every tutorial notebook has a module here (``gwlab.exercises.token_bucket`` for
``01_token_bucket``, and so on) with one check function per exercise. A check takes the
learner's answer (a number, a function, a configuration), tests it and returns a
:class:`Verdict`: true when the answer is right, and shown in the notebook as one line saying
what is right or what to look at again (so a check is the last expression of its cell). The checks know the answers, so they live here rather than in the
notebook; the worked solutions are in ``notebooks/solutions/`` (load one with ``%load``).

A check judges the idea, not the luck of one run: where chance is involved it decides over
enough seeds and cases that a wrong idea fails and a right one passes whatever the chance,
and its module's docstring states the bound and why it holds. A failing verdict names the
quantity that is off, which way (:func:`direction`) and by how much or in which case, and
recognises the characteristic wrong answers (:func:`known_mistake`). A check never raises:
an answer of the wrong kind (:func:`wrong_kind`), a huge or infinite number, or a learner's
function that raises or returns something other than a number (:func:`call`) gets a verdict
that says so.
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass
from numbers import Number
from typing import Any, Callable, Iterable


FACTOR = 10.0
"""How many times the right value an answer must be for :func:`off_by` to give the factor
rather than a percentage."""


@dataclass(frozen=True)
class Verdict:
    """The outcome of a check: ``ok`` and the message shown to the learner."""

    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return ("✔ " if self.ok else "✘ ") + self.message


def verdict(ok: bool, right: str, wrong: str) -> Verdict:
    """A :class:`Verdict` carrying the message that fits."""
    return Verdict(ok, right if ok else wrong)


def direction(got: float, want: float) -> str:
    """``"too high"`` or ``"too low"``: which way ``got`` misses ``want``."""
    return "too high" if got > want else "too low"


def off_by(got: float, want: float) -> str:
    """How far ``got`` misses ``want`` (not 0), for "too high by ...": a percentage, or for
    an answer :data:`FACTOR` times ``want`` or more, the factor."""
    ratio = got / want
    return f"a factor of {ratio:.3g}" if ratio >= FACTOR else f"{abs(got - want) / abs(want):.0%}"


def known_mistake(answer: float, mistakes: Iterable[tuple[float, str]], tolerance: float) -> str | None:
    """The explanation of the first characteristic wrong answer (``(value, explanation)``)
    within ``tolerance`` of ``answer``, or ``None``."""
    return next((why for value, why in mistakes if abs(answer - value) <= tolerance), None)


def shown(answer: Any) -> str:
    """``answer`` as a message shows it: its ``repr``, cut short when long (:mod:`reprlib`)."""
    return reprlib.repr(answer)


def number(answer: Any) -> float | None:
    """``answer`` as a float when it is a real number (not a bool) of finite float value,
    else ``None`` (for ``None``, text, NaN, an infinity, an int too large for a float)."""
    if isinstance(answer, (bool, complex)) or not isinstance(answer, Number):
        return None
    try:
        value = float(answer)
    except (OverflowError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def wrong_kind(answer: Any, expected: str) -> Verdict:
    """The failing verdict on an answer that is not of the kind asked for: what it is and
    ``expected`` (what was asked for, with an example). ``None`` is what a function returns
    when its body is still ``pass`` or it has no ``return``, and the message says so."""
    if answer is None:
        return Verdict(False, f"answer is None, which is what a function returns when its body is still `pass` or "
                              f"it has no `return`: expected {expected}")
    if callable(answer):
        return Verdict(False, f"answer is the function {getattr(answer, '__name__', shown(answer))}: expected "
                              f"{expected}; call it and set answer to what it returns")
    return Verdict(False, f"answer = {shown(answer)}: expected {expected}")


def call(function: Callable[..., Any], *args: Any) -> float | str:
    """What the learner's ``function`` gives for ``args`` as a float (NaN and infinities
    included), or, when it raised or gave something other than a real number, what it did
    instead: a phrase such as ``"raised NameError: name 'x' is not defined"``."""
    try:
        got = function(*args)
    except Exception as exc:  # the learner's code may fail in any way: report it, never raise
        return f"raised {type(exc).__name__}: {exc}"
    if got is None:
        return "returned None: is its body still `pass`, or is a `return` missing?"
    if isinstance(got, (bool, complex)) or not isinstance(got, Number):
        return f"returned {shown(got)}, not a number"
    try:
        return float(got)
    except OverflowError:
        return f"returned {shown(got)}, too large for a float"
