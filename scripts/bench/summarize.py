"""Turn the JSON lines of scripts/bench-client.sh into its table, and optionally into
docs/benchmarks.md.

Input: one JSON object a line, as printed by the infphys example ``bench_closed_loop`` or by
threadpool_loadgen.py, plus the fields the script adds: ``delay_ms``, ``capped``,
``server_cpu_s`` and ``warmup``. Standard library only, so it runs with any Python 3.8 or newer.
"""

import argparse
import json
import sys

# Text between this marker and the end of docs/benchmarks.md is kept when the file is rewritten,
# so notes written by hand survive a new run.
NOTES_MARKER = "<!-- Notes below this line are kept when bench-client.sh rewrites this file. -->"

COLUMNS = [
    "tool",
    "concurrency",
    "requests",
    "p50 − delay (ms)",
    "p99 − delay (ms)",
    "achieved / ideal rate",
    "client CPU s / 1000 req",
    "server CPU s / 1000 req",
    "peak RSS (MiB)",
    "errors",
]


def format_row(run):
    """Format one run as table cells, in the order of COLUMNS."""
    delay_s = run["delay_ms"] / 1000.0
    ideal_rps = run["concurrency"] / delay_s
    per_thousand = 1000.0 / run["requests"]

    def inflation(key):
        value = run.get(key)
        return "n/a" if value is None else f"{(value - delay_s) * 1000:.2f}"

    requests = str(run["requests"])
    if run.get("capped"):
        requests += " (capped)"
    server_cpu = run.get("server_cpu_s")
    # The server ran for the warm-up requests too.
    server_per_thousand = 1000.0 / (run["requests"] + run.get("warmup", 0))
    return [
        run["tool"],
        str(run["concurrency"]),
        requests,
        inflation("p50_s"),
        inflation("p99_s"),
        f"{run['rps'] / ideal_rps:.1%}",
        f"{run['cpu_s'] * per_thousand:.3f}",
        "n/a" if server_cpu is None else f"{server_cpu * server_per_thousand:.3f}",
        f"{run['peak_rss_kib'] / 1024:.1f}",
        str(run["err"]),
    ]


def text_table(rows):
    """Align rows as plain text columns, with a header line."""
    table = [COLUMNS] + rows
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines = []
    for index, row in enumerate(table):
        lines.append("  ".join(cell.rjust(widths[i]) if i else cell.ljust(widths[i]) for i, cell in enumerate(row)))
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def markdown_table(rows):
    """Format rows as a GitHub-flavored Markdown table."""
    lines = ["| " + " | ".join(COLUMNS) + " |"]
    lines.append("|" + "|".join([" --- "] + [" ---: "] * (len(COLUMNS) - 1)) + "|")
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def read_kept_notes(path):
    """Return the text after NOTES_MARKER in an existing file, or an empty string."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return ""
    _, marker, notes = text.partition(NOTES_MARKER)
    return notes if marker else ""


def warmup_sentence(warmup):
    """Say whether the timed runs followed an untimed warm-up round."""
    if warmup:
        return (
            "Each timed run follows one untimed round of `concurrency` requests from the same\n"
            "process, so infphys starts with its pooled connections open and the peer with its\n"
            "threads started. Each run gets a freshly started server."
        )
    return (
        "The timed runs include the first round, with its connection set-up (`--no-warmup`).\n"
        "Each run gets a freshly started server."
    )


def write_markdown(path, rows, machine, command, delay_ms, warmup, notes):
    """Write the benchmark page: the table, the command, the machine and any kept notes."""
    sample_errors = machine.pop("sample_errors", [])
    page = [
        "# Client overhead benchmark",
        "",
        "How much the infphys load generator adds to the latency and throughput it measures, next",
        "to a Python load generator written the common way (`requests.post` per request in a",
        "`ThreadPoolExecutor`). Both drive a loopback server that responds to every chat completion",
        f"after {delay_ms} ms, so any latency above {delay_ms} ms and any rate below",
        f"concurrency / {delay_ms} ms is overhead of the client, the server or the machine.",
        "",
        "This page is written by `scripts/bench-client.sh`. Rerun it rather than editing the",
        "table by hand.",
        "",
        "## Results",
        "",
        warmup_sentence(warmup),
        "",
        markdown_table(rows),
        "",
        "Columns:",
        "",
        f"- p50 − delay and p99 − delay: latency percentiles of successful requests minus the {delay_ms} ms",
        "  delay. The server times the delay on a dedicated thread instead of tokio's 1 ms timer",
        "  ticks, but its CPU work, its thread wake-ups and the loopback round trip still count here,",
        "  whichever client runs.",
        f"- achieved / ideal rate: requests per second of wall time, over concurrency / {delay_ms} ms.",
        "- client CPU s / 1000 req: user plus system CPU time of the client process during the run,",
        "  from /proc/self/stat, per 1000 requests. The resolution is one clock tick (10 ms), so",
        "  short runs are coarse.",
        "- server CPU s / 1000 req: the same for the server process over its whole life, per 1000",
        "  requests including the warm-up round.",
        "- peak RSS: VmHWM of the client process.",
        "",
        "## How it was run",
        "",
        "```",
        command,
        "```",
        "",
    ]
    page.extend(f"- {key}: {value}" for key, value in machine.items())
    if sample_errors:
        page += ["", "First error of each run with errors:", ""]
        page.extend(f"- {error}" for error in sample_errors)
    page += ["", NOTES_MARKER]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(page))
        f.write(notes if notes else "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="file of JSON lines, one a run")
    parser.add_argument("--markdown", help="write the benchmark page to this path")
    parser.add_argument("--machine", help="JSON object of machine facts for the page")
    parser.add_argument("--command", default="scripts/bench-client.sh", help="command shown on the page")
    args = parser.parse_args()

    with open(args.results, encoding="utf-8") as f:
        runs = [json.loads(line) for line in f if line.strip()]
    if not runs:
        sys.exit(f"error: no runs in {args.results}")
    rows = [format_row(run) for run in runs]
    print(text_table(rows))

    if args.markdown:
        machine = json.loads(args.machine) if args.machine else {}
        machine["sample_errors"] = [
            f"{run['tool']} at concurrency {run['concurrency']}: {run['sample_error']}"
            for run in runs
            if run.get("sample_error")
        ]
        notes = read_kept_notes(args.markdown)
        warmup = any(run.get("warmup") for run in runs)
        write_markdown(args.markdown, rows, machine, args.command, runs[0]["delay_ms"], warmup, notes)
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
