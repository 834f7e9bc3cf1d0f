"""What ``lab.run_for`` returns, in either mode of the lab."""

from __future__ import annotations

from typing import Any

from gwlab import live


class Summary(dict):
    """A run summary (the schema of ``gwlab run --json``) that shows itself as a few lines."""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("\n".join(live.summary_lines(self)))
