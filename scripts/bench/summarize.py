"""Turn the JSON lines of scripts/bench-peers.sh into its tables, and optionally into
docs/benchmarks.md.

Input: one JSON object a line, as printed by the infphys example ``bench_closed_loop`` or by the
load generators in this folder. The script adds ``section`` (``levels``, ``max-rate`` or
``rss``), ``delay_ms``, ``capped``, ``server_cpu_s``, ``warmup`` and ``load1`` (the 1-minute load
average after the run). Lines without ``section`` or ``stream`` count as
non-streaming ``levels`` runs. Standard library only, so it runs with any Python 3.8 or newer.
"""

import argparse
import json
import sys

# Text between this marker and the end of docs/benchmarks.md is kept when the file is rewritten,
# so notes written by hand survive a new run.
NOTES_MARKER = "<!-- Notes below this line are kept when bench-peers.sh rewrites this file. -->"
# The marker of pages written before bench-peers.sh existed, still recognized when reading.
OLD_NOTES_MARKERS = ["<!-- Notes below this line are kept when bench-client.sh rewrites this file. -->"]

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

MAX_RATE_COLUMNS = [
    "tool",
    "concurrency",
    "requests",
    "requests / s",
    "p50 (ms)",
    "p99 (ms)",
    "client CPU s / 1000 req",
    "server CPU s / 1000 req",
    "peak RSS (MiB)",
    "errors",
]

# Targets for infphys. P99_TARGETS maps a concurrency level to its limit on p99 − delay, in ms.
P99_TARGETS = {256: 2.0, 1024: 5.0}
RATE_TARGET_CONCURRENCY = 256
RATE_TARGET = 0.97
RSS_TARGET_MB = 200.0
PER_REQUEST_TARGET_KB = 10.0


def per_thousand(seconds, requests):
    return seconds * 1000.0 / requests


def server_per_thousand(run):
    """Server CPU seconds per 1000 requests; the server also served the warm-up requests."""
    return per_thousand(run["server_cpu_s"], run["requests"] + run.get("warmup", 0))


def requests_cell(run):
    cell = str(run["requests"])
    return cell + " (capped)" if run.get("capped") else cell


def format_row(run):
    """Format one levels run as table cells, in the order of COLUMNS."""
    delay_s = run["delay_ms"] / 1000.0
    ideal_rps = run["concurrency"] / delay_s

    def inflation(key):
        value = run.get(key)
        return "n/a" if value is None else f"{(value - delay_s) * 1000:.2f}"

    server_cpu = run.get("server_cpu_s")
    return [
        run["tool"],
        str(run["concurrency"]),
        requests_cell(run),
        inflation("p50_s"),
        inflation("p99_s"),
        f"{run['rps'] / ideal_rps:.1%}",
        f"{per_thousand(run['cpu_s'], run['requests']):.3f}",
        "n/a" if server_cpu is None else f"{server_per_thousand(run):.3f}",
        f"{run['peak_rss_kib'] / 1024:.1f}",
        str(run["err"]),
    ]


def format_max_rate_row(run):
    """Format one zero-delay run as table cells, in the order of MAX_RATE_COLUMNS."""

    def milliseconds(key):
        value = run.get(key)
        return "n/a" if value is None else f"{value * 1000:.3f}"

    return [
        run["tool"],
        str(run["concurrency"]),
        requests_cell(run),
        f"{run['rps']:,.0f}",
        milliseconds("p50_s"),
        milliseconds("p99_s"),
        f"{per_thousand(run['cpu_s'], run['requests']):.3f}",
        f"{server_per_thousand(run):.3f}",
        f"{run['peak_rss_kib'] / 1024:.1f}",
        str(run["err"]),
    ]


def text_table(columns, rows):
    """Align rows as plain text columns, with a header line."""
    table = [columns] + rows
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    lines = []
    for index, row in enumerate(table):
        lines.append("  ".join(cell.rjust(widths[i]) if i else cell.ljust(widths[i]) for i, cell in enumerate(row)))
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def markdown_table(columns, rows):
    """Format rows as a GitHub-flavored Markdown table."""
    lines = ["| " + " | ".join(columns) + " |"]
    lines.append("|" + "|".join([" --- "] + [" ---: "] * (len(columns) - 1)) + "|")
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def find_run(runs, section, tool, concurrency, stream=False):
    """Return the first run that matches, or None."""
    for run in runs:
        if (
            run.get("section", "levels") == section
            and run["tool"] == tool
            and run["concurrency"] == concurrency
            and bool(run.get("stream")) == stream
        ):
            return run
    return None


def target_rows(runs):
    """Check infphys's targets against the runs; return Markdown table rows, one per target found."""
    rows = []

    def add(name, measured_text, target_text, holds, margin_text):
        rows.append([name, measured_text, target_text, "holds" if holds else "misses", margin_text])

    for stream in (False, True):
        mode = "streaming" if stream else "non-streaming"
        for concurrency, limit_ms in P99_TARGETS.items():
            run = find_run(runs, "levels", "infphys", concurrency, stream)
            if run and run.get("p99_s") is not None:
                measured = (run["p99_s"] - run["delay_ms"] / 1000.0) * 1000
                add(
                    f"p99 − delay at {concurrency}, {mode}",
                    f"{measured:.2f} ms",
                    f"≤ {limit_ms:g} ms",
                    measured <= limit_ms,
                    f"{abs(measured - limit_ms):.2f} ms {'under' if measured <= limit_ms else 'over'}",
                )
        run = find_run(runs, "levels", "infphys", RATE_TARGET_CONCURRENCY, stream)
        if run:
            ratio = run["rps"] / (run["concurrency"] / (run["delay_ms"] / 1000.0))
            add(
                f"achieved / ideal rate at {RATE_TARGET_CONCURRENCY}, {mode}",
                f"{ratio:.1%}",
                f"≥ {RATE_TARGET:.0%}",
                ratio >= RATE_TARGET,
                f"{abs(ratio - RATE_TARGET) * 100:.1f} points {'above' if ratio >= RATE_TARGET else 'below'}",
            )

    max_runs = {run["tool"]: run for run in runs if run.get("section") == "max-rate"}
    if "infphys" in max_runs and "oha" in max_runs:
        ours, theirs = max_runs["infphys"]["rps"], max_runs["oha"]["rps"]
        add(
            f"zero-delay requests / s at {max_runs['infphys']['concurrency']}",
            f"{ours:,.0f} vs oha {theirs:,.0f}",
            "infphys ≥ oha",
            ours >= theirs,
            f"infphys at {ours / theirs:.1%} of oha",
        )

    rss_run = next((run for run in runs if run.get("section") == "rss"), None)
    if rss_run:
        megabytes = rss_run["peak_rss_kib"] * 1024 / 1e6
        add(
            f"peak RSS of {rss_run['requests']:,} requests at {rss_run['concurrency']}",
            f"{megabytes:.1f} MB",
            f"< {RSS_TARGET_MB:g} MB",
            megabytes < RSS_TARGET_MB,
            f"{abs(RSS_TARGET_MB - megabytes):.1f} MB {'under' if megabytes < RSS_TARGET_MB else 'over'}",
        )
    low, high = find_run(runs, "levels", "infphys", 1), find_run(runs, "levels", "infphys", 1024)
    if low and high:
        kilobytes = (high["peak_rss_kib"] - low["peak_rss_kib"]) * 1024 / 1e3 / 1023
        add(
            "(RSS at 1024 − RSS at 1) / 1023, non-streaming",
            f"{kilobytes:.1f} KB",
            f"< {PER_REQUEST_TARGET_KB:g} KB",
            kilobytes < PER_REQUEST_TARGET_KB,
            f"{abs(PER_REQUEST_TARGET_KB - kilobytes):.1f} KB "
            f"{'under' if kilobytes < PER_REQUEST_TARGET_KB else 'over'}",
        )
    return rows


def read_kept_notes(path):
    """Return the text after the notes marker in an existing file, or an empty string."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return ""
    for marker in [NOTES_MARKER] + OLD_NOTES_MARKERS:
        _, found, notes = text.partition(marker)
        if found:
            return notes
    return ""


def warmup_sentence(warmup):
    """Say whether the timed runs followed an untimed warm-up round."""
    if warmup:
        return (
            "Each timed run of infphys, aiohttp and the thread pool follows one untimed round of\n"
            "`concurrency` requests from the same process, so infphys and aiohttp start with their\n"
            "pooled connections open and the thread pool with its threads started. oha cannot send\n"
            "untimed requests, so its timed run includes opening its connections. Each run gets a\n"
            "freshly started server."
        )
    return (
        "The timed runs include the first round, with its connection set-up (`--no-warmup`).\n"
        "Each run gets a freshly started server."
    )


def levels_tables(runs, table):
    """Return (heading, table) pairs of the levels runs, non-streaming first."""
    sections = []
    for stream, heading in ((False, "Non-streaming"), (True, "Streaming")):
        rows = [format_row(run) for run in runs if run.get("section", "levels") == "levels" and bool(run.get("stream")) == stream]
        if rows:
            sections.append((heading, table(COLUMNS, rows)))
    return sections


def load_range(runs):
    loads = [run["load1"] for run in runs if "load1" in run]
    return (min(loads), max(loads)) if loads else None


def write_markdown(path, runs, machine, command, stream_chunks, notes):
    """Write the benchmark page: the tables, the targets, the command, the machine and any kept notes."""
    sample_errors = machine.pop("sample_errors", [])
    delay_ms = next(run["delay_ms"] for run in runs if run.get("section", "levels") == "levels")
    warmup = any(run.get("warmup") for run in runs)
    page = [
        "# Client overhead benchmark",
        "",
        "How much the infphys load generator adds to the latency and throughput it measures, side",
        "by side with three peers. oha is a Rust HTTP load generator, `scripts/bench/aiohttp_loadgen.py`",
        "an asyncio one on aiohttp, and `scripts/bench/threadpool_loadgen.py` a Python one written the",
        "way the original lab's was (`requests.post` per request in a `ThreadPoolExecutor`). All drive a",
        f"loopback server that responds to every chat completion after {delay_ms} ms, so any latency above",
        f"{delay_ms} ms and any rate below concurrency / {delay_ms} ms is overhead of the client, the server or the",
        "machine.",
        "",
        "This page is written by `scripts/bench-peers.sh`. Rerun it rather than editing the",
        "tables by hand.",
        "",
        "## Results",
        "",
        warmup_sentence(warmup),
        "",
        f"A streamed response is a role chunk at once, {stream_chunks} one-token content chunks spread",
        f"evenly over the {delay_ms} ms with the last at {delay_ms} ms, then a usage chunk and",
        "`data: [DONE]`. Every tool times it to the end of the body: infphys's latency here is the",
        "time until the stream closed, not its time to the last token.",
    ]
    for heading, table in levels_tables(runs, markdown_table):
        page += ["", f"### {heading}", "", table]

    max_rows = [format_max_rate_row(run) for run in runs if run.get("section") == "max-rate"]
    if max_rows:
        page += [
            "",
            "### Maximum rate against a zero-delay server",
            "",
            "The same server with no delay, non-streaming, no warm-up round for either tool. Client",
            "and server share the CPUs, so this measures the client's cost per request more than",
            "the server's capacity.",
            "",
            markdown_table(MAX_RATE_COLUMNS, max_rows),
        ]

    targets = target_rows(runs)
    if targets:
        loads = load_range(runs)
        load_text = f" The 1-minute load average after each run ranged from {loads[0]:.2f} to {loads[1]:.2f}." if loads else ""
        page += [
            "",
            "### Targets for infphys",
            "",
            "Checked on the run above. MB and KB are 10^6 and 10^3 bytes. Peak RSS at 1024 includes",
            "the rows kept for every request of the run and the warm-up round, so the per-request",
            f"figure is an upper bound on the memory of one request in flight.{load_text}",
            "",
            markdown_table(["target", "measured", "limit", "verdict", "margin"], targets),
        ]

    page += [
        "",
        "Columns:",
        "",
        f"- p50 − delay and p99 − delay: latency percentiles of successful requests minus the {delay_ms} ms",
        "  delay. The server times the delay on a dedicated thread instead of tokio's 1 ms timer",
        "  ticks, but its CPU work, its thread wake-ups and the loopback round trip still count here,",
        "  whichever client runs. oha's percentiles cover all its requests.",
        f"- achieved / ideal rate: requests per second of wall time, over concurrency / {delay_ms} ms.",
        "- client CPU s / 1000 req: user plus system CPU time of the client process during the timed",
        "  run, from /proc/self/stat, per 1000 requests. The resolution is one clock tick (10 ms), so",
        "  short runs are coarse. For oha it is the whole process, start-up included, from",
        "  `os.wait4`.",
        "- server CPU s / 1000 req: the same for the server process over its whole life, per 1000",
        "  requests including the warm-up round.",
        "- peak RSS: VmHWM of the client process (for oha, `ru_maxrss`).",
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


def print_tables(runs):
    for heading, table in levels_tables(runs, text_table):
        print(f"{heading}\n{table}\n")
    max_rows = [format_max_rate_row(run) for run in runs if run.get("section") == "max-rate"]
    if max_rows:
        print(f"Maximum rate, zero delay\n{text_table(MAX_RATE_COLUMNS, max_rows)}\n")
    targets = target_rows(runs)
    if targets:
        print(f"Targets for infphys\n{text_table(['target', 'measured', 'limit', 'verdict', 'margin'], targets)}")
    loads = load_range(runs)
    if loads:
        print(f"\n1-minute load average after each run: {loads[0]:.2f} to {loads[1]:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="file of JSON lines, one a run")
    parser.add_argument("--markdown", help="write the benchmark page to this path")
    parser.add_argument("--machine", help="JSON object of machine facts for the page")
    parser.add_argument("--command", default="scripts/bench-peers.sh", help="command shown on the page")
    parser.add_argument("--stream-chunks", type=int, default=4, help="content chunks per streamed response")
    args = parser.parse_args()

    with open(args.results, encoding="utf-8") as f:
        runs = [json.loads(line) for line in f if line.strip()]
    if not runs:
        sys.exit(f"error: no runs in {args.results}")
    print_tables(runs)

    if args.markdown:
        machine = json.loads(args.machine) if args.machine else {}
        machine["sample_errors"] = [
            f"{run['tool']} ({'streaming' if run.get('stream') else 'non-streaming'}) at concurrency "
            f"{run['concurrency']}: {run['sample_error']}"
            for run in runs
            if run.get("sample_error")
        ]
        notes = read_kept_notes(args.markdown)
        write_markdown(args.markdown, runs, machine, args.command, args.stream_chunks, notes)
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
