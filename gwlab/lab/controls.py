"""Sliders that show the value they hold, and hold the value they are given.

ipywidgets' own sliders round what they show (a ``FloatSlider`` reads 0.002 as 0.00), and
a ``FloatLogSlider`` snaps to its step in the exponent: given 30 with base 2 and step 0.5 it
moves to 2⁵ = 32, shows 32 and, as it updates continuously, sends 32 back to the kernel. The
sliders made here:

- read out with :data:`READOUT`: the value as it is, up to six significant digits;
- send nothing while dragged (``continuous_update=False``), and a log slider has no step, so
  a value set from code or typed into the readout stays where it is, in the kernel and on
  the screen;
- keep :data:`DIGITS` significant digits of a value dragged to in the browser (a drag on a
  log slider lands anywhere, a linear step leaves float noise), and show the browser the
  value kept;
- widen their range to hold a value given to :func:`show`, where ipywidgets would clamp it
  (and the browser would send the clamped value back as a change).

The live dashboard is built from them, and a notebook's own ``interact`` can use them too.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import ipywidgets as widgets

READOUT = ".6"
"""d3 number format of a float slider's readout: up to six significant digits with trailing
zeros trimmed (0.002 reads 0.002, 3000 reads 3000, 27.34 reads 27.34)."""
DIGITS = 4
"""Significant digits kept of a value set in the browser."""
LOG_BASE = 10
"""Base of a log slider: its ends are whole powers of it around the range asked for."""
EXPONENT_DIGITS = 9
"""Decimals of an exponent kept before it is rounded to a whole one: log(1000, 10) is a hair
below 3."""


def significant(value: float, digits: int = DIGITS) -> float:
    """``value`` rounded to ``digits`` significant digits."""
    return float(f"{value:.{digits}g}")


class _Kept:
    """A slider whose values from the browser are kept to :data:`DIGITS` significant digits;
    when that changes one, the browser is sent the value kept, so screen and kernel agree."""

    def set_state(self, sync_data: dict[str, Any]) -> None:
        if "value" not in sync_data:
            super().set_state(sync_data)
            return
        sent = sync_data["value"]
        kept = significant(sent)
        super().set_state({**sync_data, "value": kept})
        if kept != sent:
            self.send_state("value")


class FloatSlider(_Kept, widgets.FloatSlider):
    """A linear float slider (see the module)."""


class LogSlider(_Kept, widgets.FloatLogSlider):
    """A logarithmic slider without a step (see the module): it lands on any value."""


def float_slider(description: str, value: float, low: float, high: float, step: float, **kwargs: Any) -> FloatSlider:
    """A linear slider from ``low`` to ``high`` in steps of ``step``, holding ``value`` (the
    range widens to hold it); ``kwargs`` go to the widget (``layout``, ``style``)."""
    slider = FloatSlider(description=description, min=low, max=high, step=step, readout_format=READOUT,
                         continuous_update=False, **kwargs)
    show(slider, value)
    return slider


def log_slider(description: str, value: float, low: float, high: float, **kwargs: Any) -> LogSlider:
    """A logarithmic slider over the powers of :data:`LOG_BASE` around ``low`` to ``high``
    (both > 0), holding ``value`` exactly; ``kwargs`` go to the widget."""
    slider = LogSlider(description=description, base=LOG_BASE, min=_exponent(low, math.floor),
                       max=_exponent(high, math.ceil), step=None, readout_format=READOUT,
                       continuous_update=False, **kwargs)
    show(slider, value)
    return slider


def int_slider(description: str, value: int, low: int, high: int, **kwargs: Any) -> widgets.IntSlider:
    """A slider over the whole numbers from ``low`` to ``high``, holding ``value``."""
    slider = widgets.IntSlider(description=description, min=low, max=high, step=1, continuous_update=False, **kwargs)
    show(slider, value)
    return slider


def show(widget: widgets.ValueWidget, value: Any) -> None:
    """Set ``widget`` to ``value``; a slider's range first widens to hold it."""
    if isinstance(widget, widgets.FloatLogSlider):
        widget.min = min(widget.min, _exponent(value, math.floor))
        widget.max = max(widget.max, _exponent(value, math.ceil))
    elif isinstance(widget, (widgets.FloatSlider, widgets.IntSlider)):
        widget.min = min(widget.min, value)
        widget.max = max(widget.max, value)
    widget.value = value


def _exponent(value: float, whole: Callable[[float], int]) -> int:
    """The exponent of the power of :data:`LOG_BASE` at or beyond ``value``: ``whole`` is
    ``math.floor`` or ``math.ceil`` (rounded first, so 1000 is exactly 10³)."""
    return whole(round(math.log(value, LOG_BASE), EXPONENT_DIGITS))
