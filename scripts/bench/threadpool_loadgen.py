"""Closed-loop load generator built the common Python way, as a peer for infphys in
scripts/bench-client.sh.

Each request is one ``requests.post`` call, with no shared Session, so each opens its own
connection. A ``concurrent.futures.ThreadPoolExecutor`` with ``max_workers=concurrency`` bounds the
requests in flight, and ``time.perf_counter()`` around the call times each one. The output is one
JSON line with the same fields as the infphys example ``bench_closed_loop``. Linux only, because
CPU time and peak RSS come from /proc/self.
"""

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import requests

BODY = {
    "model": "fixed-delay",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Say ok."},
    ],
    "max_tokens": 8,
    "temperature": 0.0,
}


def send_one(url, timeout_s):
    """Send one chat completion; return (latency in seconds, error message or None)."""
    start = time.perf_counter()
    try:
        response = requests.post(url, json=BODY, timeout=timeout_s)
        response.raise_for_status()
        text = response.json()["choices"][0]["message"]["content"]
        error = None if text.strip() else "the response carried no generated text"
    except (requests.RequestException, ValueError, KeyError, IndexError, TypeError) as e:
        error = f"{type(e).__name__}: {e}"
    return time.perf_counter() - start, error


def percentile(values, p):
    """Percentile with linear interpolation between ranks, as numpy.percentile computes it."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    lower = int(rank)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (rank - lower)


def cpu_seconds():
    """User plus system CPU time of this process, from fields 14 and 15 of /proc/self/stat."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_kib():
    """Peak resident set size in KiB: VmHWM from /proc/self/status."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("VmHWM not found in /proc/self/status")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="base URL, such as http://127.0.0.1:41234")
    parser.add_argument("--concurrency", type=int, default=1, help="maximum requests in flight")
    parser.add_argument("--requests", type=int, default=50, help="requests to send in all")
    parser.add_argument("--timeout-s", type=float, default=30.0, help="timeout per request, in seconds")
    parser.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="requests sent through the pool before the measured run, untimed, so its threads exist",
    )
    args = parser.parse_args()
    if args.concurrency < 1 or args.requests < 1:
        parser.error("--concurrency and --requests must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be at least 0")

    url = args.url.rstrip("/") + "/v1/chat/completions"
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        # Each requests.post opens its own connection, so the warm-up only starts the threads.
        list(pool.map(lambda _: send_one(url, args.timeout_s), range(args.warmup)))
        cpu_before = cpu_seconds()
        started = time.perf_counter()
        futures = [pool.submit(send_one, url, args.timeout_s) for _ in range(args.requests)]
        results = [future.result() for future in futures]
        wall_s = time.perf_counter() - started
        cpu_used = cpu_seconds() - cpu_before

    latencies = [latency for latency, error in results if error is None]
    errors = [error for _, error in results if error is not None]
    p50 = percentile(latencies, 50.0)
    p99 = percentile(latencies, 99.0)
    line = {
        "tool": "python-threadpool",
        "concurrency": args.concurrency,
        "requests": args.requests,
        "ok": len(latencies),
        "err": len(errors),
        "p50_s": p50,
        "p99_s": p99,
        "wall_s": wall_s,
        "rps": len(results) / wall_s,
        "cpu_s": cpu_used,
        "peak_rss_kib": peak_rss_kib(),
        "sample_error": errors[0] if errors else None,
    }
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
