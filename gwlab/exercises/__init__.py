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
function that raises, returns something other than a number or does not return (:func:`call`)
gets a verdict that says so.
"""

from __future__ import annotations

import contextlib
import math
import reprlib
import signal
import threading
import time
from dataclasses import dataclass
from numbers import Integral, Number
from typing import Any, Callable, Iterable, Iterator

from gwlab import config


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
    """How far ``got`` misses ``want`` (not 0), for "too high by ..." or "too low by ...": a
    percentage, or for an answer :data:`FACTOR` times ``want`` or more, or that many times
    less (of the same sign), the factor."""
    ratio = got / want
    if ratio >= FACTOR or 0 < ratio <= 1 / FACTOR:
        return f"a factor of {max(ratio, 1 / ratio):.3g}"
    return f"{abs(got - want) / abs(want):.0%}"


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


def whole(answer: Any) -> int | None:
    """``answer`` as an int when it is a whole number: an integer of any type (not a bool),
    or a real number of whole finite value (``9.0``, ``numpy.ceil(8.2)``); else ``None``."""
    if isinstance(answer, bool):
        return None
    if isinstance(answer, Integral):
        return int(answer)
    value = number(answer)
    return int(value) if value is not None and value.is_integer() else None


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


class _TookTooLong(BaseException):
    """Raised in the learner's function when :data:`~gwlab.config.EXERCISE_CALL_TIMEOUT` runs
    out: not an Exception, so that no ``except Exception`` of theirs holds it."""


def _expire(signum: int, frame: Any) -> None:
    raise _TookTooLong


def _arm(seconds: float) -> Callable[[], None] | None:
    """Have SIGALRM raise :class:`_TookTooLong` after ``seconds``, where a timer signal can (a
    POSIX main thread): what puts things back as they were, or ``None`` when nothing was
    armed (a thread, Pyodide, or a timer already running that is due first, which stays as it
    was). A later running timer (a test runner's) is set again, once put back, for what it
    had left."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        return None
    started = time.monotonic()
    try:
        handler = signal.signal(signal.SIGALRM, _expire)
    except (OSError, ValueError):  # no timer signals here after all
        return None
    try:
        left, interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    except OSError:
        signal.signal(signal.SIGALRM, handler)
        return None

    def restore() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, handler)
        if left:
            signal.setitimer(signal.ITIMER_REAL, max(1e-6, left - (time.monotonic() - started)), interval)

    if left and left <= seconds:
        restore()
        return None
    return restore


@contextlib.contextmanager
def _bounded(seconds: float) -> Iterator[None]:
    """Raise :class:`_TookTooLong` in the block after ``seconds`` where :func:`_arm` can."""
    restore = _arm(seconds)
    try:
        yield
    finally:
        if restore is not None:
            restore()


def call(function: Callable[..., Any], *args: Any) -> float | str:
    """What the learner's ``function`` gives for ``args`` as a float (NaN and infinities
    included), or, when it raised, gave something other than a real number or did not
    return within :data:`~gwlab.config.EXERCISE_CALL_TIMEOUT` seconds, what it did instead:
    a phrase such as ``"raised NameError: name 'x' is not defined"``."""
    try:
        with _bounded(config.EXERCISE_CALL_TIMEOUT):
            got = function(*args)
    except _TookTooLong:
        return f"did not return within {config.EXERCISE_CALL_TIMEOUT:g} s: does a loop never end?"
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
