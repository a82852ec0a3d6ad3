#!/usr/bin/env python3
"""Check that an infphys report drew every chart in headless Chromium with the network blocked.

Usage: check_report.py REPORT.html

Chromium renders the page from a file:// URL with every host name unresolvable and a dead
proxy, so any chart that needed a CDN would stay empty. The rendered DOM is then parsed: every
chart container (class "infphys-chart") must hold plotly's drawn SVG (class "main-svg").
Prints one line per chart and a closing "N passed, N failed" line; exits 1 on any failure.
"""

import html.parser
import os
import subprocess
import sys
import tempfile

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


class ChartCollector(html.parser.HTMLParser):
    """Collects each chart container's id and whether an SVG with class main-svg is inside."""

    def __init__(self):
        super().__init__()
        self.charts = {}
        self.stack = []  # ids of open chart containers, with their depth

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if tag == "div" and "infphys-chart" in classes:
            chart_id = attributes.get("id", f"chart-{len(self.charts)}")
            self.charts[chart_id] = False
            self.stack.append([chart_id, 0])
        elif self.stack:
            self.stack[-1][1] += 1
            if tag == "svg" and "main-svg" in classes:
                self.charts[self.stack[-1][0]] = True

    def handle_endtag(self, tag):
        if not self.stack:
            return
        if self.stack[-1][1] == 0 and tag == "div":
            self.stack.pop()
        else:
            self.stack[-1][1] -= 1


def render(report):
    with tempfile.TemporaryDirectory() as profile:
        command = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--proxy-server=127.0.0.1:9",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=20000",
            "--dump-dom",
            "file://" + os.path.abspath(report),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=180)
        if result.returncode != 0:
            sys.exit(f"chromium failed with exit code {result.returncode}: {result.stderr[-2000:]}")
        return result.stdout


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    collector = ChartCollector()
    collector.feed(render(sys.argv[1]))

    failed = [chart for chart, drawn in collector.charts.items() if not drawn]
    for chart, drawn in collector.charts.items():
        print(f"{'drawn' if drawn else 'EMPTY'}: {chart}")
    if not collector.charts:
        print("no chart containers found in the report")
        failed = ["(none)"]
    passed = len(collector.charts) - len([f for f in failed if f in collector.charts])
    print(f"report charts: {passed} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
