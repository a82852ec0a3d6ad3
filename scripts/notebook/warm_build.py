"""Run the first code cell of each notebook in a fresh Rust kernel, so that evcxr compiles the
notebooks' dependencies once and keeps them in its cache.

A notebook's first code cell contains its `:dep`, `:opt` and `:cache` lines. evcxr reuses a
compiled registry crate from its cache ($XDG_CACHE_HOME/evcxr) only when those lines, the crate
versions and rustc are the same, so the only build that warms a learner's first cell is one
that runs that very cell; a `cargo build` of the workspace does not.

Usage: warm_build.py NOTEBOOK_DIR          run the cells, printing how long each took
       warm_build.py --print-cells DIR     print the cells, for set-up's fingerprint
"""

import argparse
import pathlib
import sys
import time

import nbformat
from nbclient import NotebookClient

KERNEL = "rust"
# A first build of polars and plotly took 6 to 14 minutes on 2 cores; allow twice that.
CELL_TIMEOUT_S = 1800


def first_code_cells(notebook_dir: pathlib.Path) -> list[tuple[pathlib.Path, str]]:
    """Return (notebook, source of its first code cell) for every notebook in the folder."""
    cells = []
    for path in sorted(notebook_dir.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
        if not code:
            continue
        if ":dep" not in code[0]:
            sys.exit(f"{path}: the first code cell must contain the notebook's :dep lines")
        cells.append((path, code[0]))
    return cells


def run_cell(notebook_path: pathlib.Path, source: str) -> float:
    """Execute `source` in a fresh kernel started in the notebook's folder; return seconds."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Rust", "language": "rust"}
    notebook.cells = [nbformat.v4.new_code_cell(source)]
    client = NotebookClient(
        notebook,
        kernel_name=KERNEL,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(notebook_path.parent)}},
    )
    started = time.monotonic()
    client.execute()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook_dir", type=pathlib.Path)
    parser.add_argument("--print-cells", action="store_true")
    args = parser.parse_args()

    cells = first_code_cells(args.notebook_dir)
    if args.print_cells:
        for path, source in cells:
            print(f"## {path.name}\n{source}")
        return

    seen = set()
    for path, source in cells:
        # Notebooks with the same first cell share one build.
        if source in seen:
            continue
        seen.add(source)
        print(f"warm build: running the first cell of {path.name}", flush=True)
        seconds = run_cell(path, source)
        print(f"warm build: {path.name} first cell took {seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()
