"""Run oha, the Rust HTTP load generator, as a closed-loop peer for infphys in
scripts/bench-peers.sh, and print its result as the same JSON line as the other load generators.

oha runs as ``oha -c CONCURRENCY -n REQUESTS --no-tui --output-format json`` with a POST of the
same chat-completion body. It keeps at most CONCURRENCY requests in flight on as many kept-alive
connections and times each request to the end of its body, so a streamed response is timed in
full. It cannot send untimed requests first, so its timed run includes opening its connections.
Its CPU time and peak RSS come from os.wait4's resource usage of the oha process, start-up
included. Linux only.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from loadgen_common import request_body

POLL_INTERVAL_S = 0.05


def run_oha(command, deadline_s):
    """Run command with stdout to a temporary file; return (stdout text, exit status, rusage).

    Kills the process and raises TimeoutError when it runs longer than deadline_s seconds.
    """
    with tempfile.TemporaryFile(mode="w+") as output:
        process = subprocess.Popen(command, stdout=output)
        deadline = time.monotonic() + deadline_s
        while True:
            pid, status, rusage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.send_signal(signal.SIGKILL)
                os.wait4(process.pid, 0)
                raise TimeoutError(f"oha did not finish within {deadline_s} s: {command}")
            time.sleep(POLL_INTERVAL_S)
        # Popen must not reap the process again.
        process.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        return output.read(), process.returncode, rusage


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--oha", required=True, help="path of the oha binary")
    parser.add_argument("--url", required=True, help="base URL, such as http://127.0.0.1:41234")
    parser.add_argument("--concurrency", type=int, default=1, help="maximum requests in flight")
    parser.add_argument("--requests", type=int, default=50, help="requests to send in all")
    parser.add_argument("--timeout-s", type=float, default=30.0, help="timeout per request, in seconds")
    parser.add_argument("--run-timeout-s", type=float, default=300.0, help="time limit for the whole oha run, in seconds")
    parser.add_argument("--stream", action="store_true", help="send streaming requests")
    args = parser.parse_args()
    if args.concurrency < 1 or args.requests < 1:
        parser.error("--concurrency and --requests must be at least 1")

    command = [
        args.oha,
        "-c", str(args.concurrency),
        "-n", str(args.requests),
        "-t", f"{args.timeout_s}s",
        "-m", "POST",
        "-H", "content-type: application/json",
        "-d", json.dumps(request_body(args.stream)),
        "--no-tui",
        "--output-format", "json",
        args.url.rstrip("/") + "/v1/chat/completions",
    ]  # fmt: skip
    text, status, rusage = run_oha(command, args.run_timeout_s)
    if status != 0:
        sys.exit(f"error: oha failed with exit status {status}: {command}")
    report = json.loads(text)

    summary = report["summary"]
    percentiles = report.get("latencyPercentiles") or {}
    ok = sum(count for code, count in report.get("statusCodeDistribution", {}).items() if code.startswith("2"))
    errors = report.get("errorDistribution", {})
    err = args.requests - ok
    sample_error = next(iter(errors), None)
    if sample_error is None and err:
        sample_error = f"HTTP status counts: {report.get('statusCodeDistribution')}"
    line = {
        "tool": "oha",
        "stream": args.stream,
        "concurrency": args.concurrency,
        "requests": args.requests,
        "ok": ok,
        "err": err,
        "p50_s": percentiles.get("p50"),
        "p99_s": percentiles.get("p99"),
        "wall_s": summary["total"],
        "rps": summary["requestsPerSec"],
        "cpu_s": rusage.ru_utime + rusage.ru_stime,
        # ru_maxrss is in KiB on Linux.
        "peak_rss_kib": rusage.ru_maxrss,
        "sample_error": sample_error,
    }
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
