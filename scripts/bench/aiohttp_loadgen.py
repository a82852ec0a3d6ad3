"""Closed-loop load generator on asyncio and aiohttp, as a peer for infphys in
scripts/bench-peers.sh.

One ``aiohttp.ClientSession`` with a connector limited to ``concurrency`` connections sends every
request, so connections are pooled and kept alive, as infphys's are. The main task acquires an
``asyncio.Semaphore(concurrency)`` permit, then starts one task per request, which releases the
permit when it finishes. ``time.perf_counter()`` times each request from just before the POST to
the end of its body. With ``--stream`` the body is read line by line until it ends. The output is
one JSON line with the same fields as the infphys example ``bench_closed_loop``. Linux only,
because CPU time and peak RSS come from /proc/self.
"""

import argparse
import asyncio
import json
import sys
import time

import aiohttp

from loadgen_common import cpu_seconds, request_body, result_line, text_of_sse_lines


async def send_one(session, url, stream):
    """Send one chat completion; return (latency in seconds, error message or None)."""
    start = time.perf_counter()
    try:
        async with session.post(url, json=request_body(stream)) as response:
            response.raise_for_status()
            if stream:
                lines = [line.decode("utf-8") async for line in response.content]
                text, done = text_of_sse_lines(line.strip() for line in lines)
                if not done:
                    raise ValueError("the stream ended without data: [DONE]")
            else:
                reply = await response.json()
                text = reply["choices"][0]["message"]["content"]
        error = None if text.strip() else "the response carried no generated text"
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError, IndexError, TypeError) as e:
        error = f"{type(e).__name__}: {e}"
    return time.perf_counter() - start, error


async def closed_loop(session, url, stream, concurrency, requests):
    """Send ``requests`` requests with at most ``concurrency`` in flight; return their results."""
    permits = asyncio.Semaphore(concurrency)
    tasks = []
    for _ in range(requests):
        await permits.acquire()
        task = asyncio.create_task(send_one(session, url, stream))
        task.add_done_callback(lambda _: permits.release())
        tasks.append(task)
    return await asyncio.gather(*tasks)


async def run(args):
    url = args.url.rstrip("/") + "/v1/chat/completions"
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=args.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # The session is shared, so the timed run reuses the warm-up's pooled connections.
        if args.warmup:
            await closed_loop(session, url, args.stream, args.concurrency, args.warmup)
        cpu_before = cpu_seconds()
        started = time.perf_counter()
        results = await closed_loop(session, url, args.stream, args.concurrency, args.requests)
        wall_s = time.perf_counter() - started
        cpu_used = cpu_seconds() - cpu_before
    return result_line("python-aiohttp", args.stream, args.concurrency, args.requests, results, wall_s, cpu_used)


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
        help="requests sent at the same concurrency before the measured run, untimed, so its connections are open",
    )
    parser.add_argument("--stream", action="store_true", help="send streaming requests and read each body to its end")
    args = parser.parse_args()
    if args.concurrency < 1 or args.requests < 1:
        parser.error("--concurrency and --requests must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be at least 0")

    print(json.dumps(asyncio.run(run(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
