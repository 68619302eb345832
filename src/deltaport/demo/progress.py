"""Live progress of the demo: per device, its state at the hub and the bytes over its link.

On a terminal it is a table redrawn in place (rich ``Live``); elsewhere (a log, a
test) each state change is printed once as a line, so the output stays readable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.table import Table

from deltaport.cli.common import human_bytes, plural
from deltaport.demo.link import TcpProxy

_STYLE = {"present": "green", "failed": "red", "in_transit": "yellow"}


@dataclass
class DeviceLine:
    """What the view shows for one device."""

    device: str
    start: str  # starting inventory
    link: TcpProxy
    state: str = "starting"
    detail: str = ""


class LiveView:
    """Per-device progress; ``set_state`` and ``refresh`` are called from the polling loop."""

    def __init__(self, console: Console, lines: list[DeviceLine], link_bps: int) -> None:
        self.console = console
        self.lines = {line.device: line for line in lines}
        self.link_bps = link_bps
        self.phase = ""
        self._started = time.monotonic()
        self._live: Live | None = None

    def __enter__(self) -> LiveView:
        if self.console.is_terminal:
            self._live = Live(self._table(), console=self.console, auto_refresh=False,
                              transient=False)
            self._live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.update(self._table(), refresh=True)
            self._live.stop()
            self._live = None

    def set_phase(self, phase: str) -> None:
        """Name what is going on (shown as the table title)."""
        self.phase = phase
        self._started = time.monotonic()
        if self._live is None:
            self.console.print(f"[bold]{phase}[/]")
        self.refresh()

    def set_state(self, device: str, state: str, detail: str = "") -> None:
        """DEVICE is now in STATE; DETAIL (e.g. a percentage) shows only in the live table.

        Off a terminal, each change of STATE is printed once, as a line.
        """
        line = self.lines[device]
        if line.state != state and self._live is None:
            self.console.print(f"  {device}: {state} ({human_bytes(line.link.bytes_down)} "
                               f"over its link, {plural(line.link.cuts, 'connection')} cut)")
        line.state = state
        line.detail = detail
        self.refresh()

    def refresh(self) -> None:
        """Redraw the table (terminal only)."""
        if self._live is not None:
            self._live.update(self._table(), refresh=True)

    def _table(self) -> Table:
        elapsed = time.monotonic() - self._started
        table = Table(title=f"{self.phase}  [dim]{elapsed:.0f} s[/]", title_justify="left")
        for name in ("device", "started with", "state", "over its link", "connections", "cut"):
            table.add_column(name, justify="right" if name in ("over its link", "connections",
                                                               "cut") else "left")
        for line in self.lines.values():
            style = next((s for k, s in _STYLE.items() if k in line.state), "white")
            table.add_row(line.device, line.start, f"[{style}]{line.state}[/]{line.detail}",
                          human_bytes(line.link.bytes_down), str(line.link.connections),
                          str(line.link.cuts))
        return table
