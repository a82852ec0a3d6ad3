"""Closed-loop load generator built the common Python way, as a peer for infphys in
scripts/bench-peers.sh.

Each request is one ``requests.post`` call, with no shared Session, so each opens its own
connection. A ``concurrent.futures.ThreadPoolExecutor`` with ``max_workers=concurrency`` bounds the
requests in flight, and ``time.perf_counter()`` around the call times each one. With ``--stream``
the call passes ``stream=True`` and reads the server-sent events with ``iter_lines`` until the
body ends. The output is one JSON line with the same fields as the infphys example
``bench_closed_loop``. Linux only, because CPU time and peak RSS come from /proc/self.
"""

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from loadgen_common import cpu_seconds, request_body, result_line, text_of_sse_lines


def send_one(url, timeout_s, stream):
    """Send one chat completion; return (latency in seconds, error message or None)."""
    start = time.perf_counter()
    try:
        if stream:
            with requests.post(url, json=request_body(True), timeout=timeout_s, stream=True) as response:
                response.raise_for_status()
                text, done = text_of_sse_lines(response.iter_lines(decode_unicode=True))
            if not done:
                raise ValueError("the stream ended without data: [DONE]")
        else:
            response = requests.post(url, json=request_body(False), timeout=timeout_s)
            response.raise_for_status()
            text = response.json()["choices"][0]["message"]["content"]
        error = None if text.strip() else "the response carried no generated text"
    except (requests.RequestException, ValueError, KeyError, IndexError, TypeError) as e:
        error = f"{type(e).__name__}: {e}"
    return time.perf_counter() - start, error


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
    parser.add_argument("--stream", action="store_true", help="send streaming requests and read each body to its end")
    args = parser.parse_args()
    if args.concurrency < 1 or args.requests < 1:
        parser.error("--concurrency and --requests must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be at least 0")

    url = args.url.rstrip("/") + "/v1/chat/completions"
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        # Each requests.post opens its own connection, so the warm-up only starts the threads.
        list(pool.map(lambda _: send_one(url, args.timeout_s, args.stream), range(args.warmup)))
        cpu_before = cpu_seconds()
        started = time.perf_counter()
        futures = [pool.submit(send_one, url, args.timeout_s, args.stream) for _ in range(args.requests)]
        results = [future.result() for future in futures]
        wall_s = time.perf_counter() - started
        cpu_used = cpu_seconds() - cpu_before

    line = result_line("python-threadpool", args.stream, args.concurrency, args.requests, results, wall_s, cpu_used)
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
