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
recognises the characteristic wrong answers (:func:`known_mistake`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


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


def known_mistake(answer: float, mistakes: Iterable[tuple[float, str]], tolerance: float) -> str | None:
    """The explanation of the first characteristic wrong answer (``(value, explanation)``)
    within ``tolerance`` of ``answer``, or ``None``."""
    return next((why for value, why in mistakes if abs(answer - value) <= tolerance), None)
