"""Execute a notebook headless in its own folder and save the executed copy.

Each cell's start and end are recorded in its metadata (nbclient's `execution` timestamps), and
a line per cell is printed as it finishes, so a long run shows where it is. At the end it prints
how long the fresh kernel took, from before it started, to finish its first cell and its first
chart cell (tagged `chart`).

Usage: execute.py NOTEBOOK OUTPUT [--cell-timeout SECONDS]
Exits 1 when a cell fails; the executed copy is saved either way.
"""

import argparse
import pathlib
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

KERNEL = "rust"


class ProgressClient(NotebookClient):
    """A NotebookClient that prints each code cell's duration when it finishes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.started = time.monotonic()
        self.first_cell_done: float | None = None
        self.first_chart_done: float | None = None

    async def async_execute_cell(self, cell, cell_index, *args, **kwargs):
        cell_started = time.monotonic()
        try:
            return await super().async_execute_cell(cell, cell_index, *args, **kwargs)
        finally:
            if cell.cell_type == "code":
                now = time.monotonic() - self.started
                if self.first_cell_done is None:
                    self.first_cell_done = now
                if self.first_chart_done is None and "chart" in cell.metadata.get("tags", []):
                    self.first_chart_done = now
                first_line = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
                print(
                    f"cell {cell_index:2d}: {time.monotonic() - cell_started:6.1f} s "
                    f"(total {now:6.1f} s)  {first_line[:60]}",
                    flush=True,
                )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=pathlib.Path)
    parser.add_argument("output", type=pathlib.Path)
    parser.add_argument("--cell-timeout", type=int, default=600)
    args = parser.parse_args()

    notebook = nbformat.read(args.notebook, as_version=4)
    client = ProgressClient(
        notebook,
        kernel_name=KERNEL,
        timeout=args.cell_timeout,
        record_timing=True,
        resources={"metadata": {"path": str(args.notebook.resolve().parent)}},
    )
    failed = False
    try:
        client.execute()
    except CellExecutionError as error:
        print(f"a cell failed:\n{error}", file=sys.stderr)
        failed = True
    finally:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, args.output)

    def seconds(value: float | None) -> str:
        return "never" if value is None else f"{value:.1f} s"

    print(
        f"{args.notebook.name}: a fresh kernel finished its first cell after "
        f"{seconds(client.first_cell_done)}, its first chart after "
        f"{seconds(client.first_chart_done)}, all cells after "
        f"{time.monotonic() - client.started:.1f} s",
        flush=True,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
