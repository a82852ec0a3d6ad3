"""Checks on the lab notebooks, each printed as one `PASS name` or `FAIL name: reason` line.

Subcommands:
  clean NOTEBOOK...       committed notebooks carry no outputs or execution counts
  executed NOTEBOOK       an executed notebook: no errors, every chart and table cell has its
                          output, plotly.js is embedded once, nothing loads from the network,
                          and the file stays under the size limit
  dom DOM_FILE NOTEBOOK   the DOM that headless Chromium dumped from the notebook's HTML
                          export: every chart of the notebook was drawn by plotly.js

Cells are recognized by their tags: `chart` cells show a plotly chart, `table` cells a
DataFrame. Exits 1 when any check failed.
"""

import argparse
import json
import pathlib
import re
import sys
from html.parser import HTMLParser

import nbformat

PLOTLY_MIME = "application/vnd.plotly.v1+json"
HTML_MIME = "text/html"
# plotly.js is 4.6 MB, embedded once; the rest of an executed lab is well under 1 MB.
MAX_EXECUTED_BYTES = 6 * 1024 * 1024
# The banner at the top of plotly.js.
PLOTLY_JS_BANNER = "plotly.js v"
# An element that makes the browser fetch from another host: an http://, https:// or
# protocol-relative //host URL in the src, href or data attribute of an element that loads it.
# Links (<a href>) load nothing until clicked, so they are allowed.
NETWORK_LOAD = re.compile(
    r"""<(?:script|link|img|iframe|embed|object|source|video|audio|image|use)\b[^<>]*"""
    r"""\b(?:src|href|data)\s*=\s*["']?\s*(?:https?:)?//""",
    re.IGNORECASE,
)
# CSS or JavaScript that fetches from another host.
NETWORK_IMPORT = re.compile(
    r"""(?:@import\s+(?:url\()?|\bimport\s*\(|\brequire\s*\(\s*\[?)\s*["']?(?:https?:)?//""",
    re.IGNORECASE,
)

failures = 0


def report(name: str, ok: bool, reason: str = "") -> None:
    global failures
    if ok:
        print(f"PASS {name}")
    else:
        failures += 1
        print(f"FAIL {name}: {reason}")


def tagged(notebook, tag: str) -> list[tuple[int, dict]]:
    return [
        (index, cell)
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and tag in cell.metadata.get("tags", [])
    ]


def bundles(cell) -> list[dict]:
    return [output["data"] for output in cell.outputs if "data" in output]


def as_text(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(value)
    return json.dumps(value)


def check_clean(paths: list[pathlib.Path]) -> None:
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        dirty = [
            index
            for index, cell in enumerate(notebook.cells)
            if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
        ]
        report(
            f"{path.name} is committed without outputs",
            not dirty,
            f"cells {dirty} have outputs or execution counts; clear them before committing "
            "(JupyterLab: Edit > Clear Outputs of All Cells)",
        )


def check_chart_cells(notebook, name: str) -> None:
    charts = tagged(notebook, "chart")
    report(f"{name} has chart cells", bool(charts), "no cell is tagged `chart`")
    untagged = [
        index
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
        and "Chart(" in cell.source
        and "chart" not in cell.metadata.get("tags", [])
    ]
    report(f"{name} tags every chart cell", not untagged, f"cells {untagged} draw a Chart untagged")
    for index, cell in charts:
        found = bundles(cell)
        has_json = any(isinstance(b.get(PLOTLY_MIME), dict) and "data" in b[PLOTLY_MIME] for b in found)
        has_html = any("Plotly.newPlot" in as_text(b.get(HTML_MIME, "")) for b in found)
        report(
            f"{name} cell {index} shows a chart",
            has_json and has_html,
            f"plotly JSON present: {has_json}, HTML fallback present: {has_html}",
        )


def check_table_cells(notebook, name: str) -> None:
    tables = tagged(notebook, "table")
    report(f"{name} has table cells", bool(tables), "no cell is tagged `table`")
    for index, cell in tables:
        has_table = any("<table" in as_text(b.get(HTML_MIME, "")) for b in bundles(cell))
        report(f"{name} cell {index} shows an HTML table", has_table, "no text/html <table> output")


def check_executed(path: pathlib.Path) -> None:
    name = path.name
    notebook = nbformat.read(path, as_version=4)

    errors = [
        (index, output.get("ename", ""), output.get("evalue", "")[:200])
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    report(f"{name} ran without errors", not errors, f"errors: {errors}")
    unexecuted = [
        index
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and cell.execution_count is None
    ]
    report(f"{name} executed every code cell", not unexecuted, f"cells {unexecuted} did not run")

    check_chart_cells(notebook, name)
    check_table_cells(notebook, name)

    loaders = [
        index
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
        for b in bundles(cell)
        if PLOTLY_JS_BANNER in as_text(b.get(HTML_MIME, ""))
    ]
    report(
        f"{name} embeds plotly.js exactly once",
        len(loaders) == 1,
        f"found in cells {loaders}; the first code cell should end with PlotlyJs",
    )

    loads = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.outputs:
            for mime, value in output.get("data", {}).items():
                text = as_text(value)
                for pattern in (NETWORK_LOAD, NETWORK_IMPORT):
                    match = pattern.search(text)
                    if match:
                        loads.append((index, mime, match.group(0)[:120]))
    report(f"{name} loads nothing from the network", not loads, f"network loads: {loads}")

    size = path.stat().st_size
    report(
        f"{name} is under {MAX_EXECUTED_BYTES // 2**20} MiB ({size / 2**20:.1f} MiB)",
        size < MAX_EXECUTED_BYTES,
        f"{size} bytes",
    )


class ChartCounter(HTMLParser):
    """Counts the infphys chart <div>s in a page and which of them plotly.js drew into.

    plotly.js adds the class `js-plotly-plot` to a div it plots into and draws its axes and
    traces in `<svg class="main-svg">` elements inside it.
    """

    def __init__(self):
        super().__init__()
        self.charts: list[dict] = []
        self.open_divs: list[dict | None] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if tag == "div":
            chart = None
            if (attributes.get("id") or "").startswith("infphys-chart-"):
                chart = {"plotted": "js-plotly-plot" in classes, "svgs": 0}
                self.charts.append(chart)
            self.open_divs.append(chart)
        elif tag == "svg" and "main-svg" in classes:
            for chart in reversed(self.open_divs):
                if chart is not None:
                    chart["svgs"] += 1
                    break

    def handle_endtag(self, tag):
        if tag == "div" and self.open_divs:
            self.open_divs.pop()


def check_dom(dom_path: pathlib.Path, notebook_path: pathlib.Path) -> None:
    expected = len(tagged(nbformat.read(notebook_path, as_version=4), "chart"))
    counter = ChartCounter()
    counter.feed(dom_path.read_text(errors="replace"))
    drawn = sum(1 for chart in counter.charts if chart["plotted"] and chart["svgs"] > 0)
    report(
        f"{notebook_path.name} HTML export has {expected} chart divs",
        len(counter.charts) == expected,
        f"found {len(counter.charts)}",
    )
    report(
        f"{notebook_path.name} HTML export drew {expected} charts offline",
        drawn == expected and expected > 0,
        f"plotly.js drew {drawn} of {len(counter.charts)} chart divs",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    clean = commands.add_parser("clean")
    clean.add_argument("notebooks", type=pathlib.Path, nargs="+")
    executed = commands.add_parser("executed")
    executed.add_argument("notebook", type=pathlib.Path)
    dom = commands.add_parser("dom")
    dom.add_argument("dom", type=pathlib.Path)
    dom.add_argument("notebook", type=pathlib.Path)
    args = parser.parse_args()

    if args.command == "clean":
        check_clean(args.notebooks)
    elif args.command == "executed":
        check_executed(args.notebook)
    else:
        check_dom(args.dom, args.notebook)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
