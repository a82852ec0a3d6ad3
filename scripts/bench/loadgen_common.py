"""Helpers shared by the Python load generators of scripts/bench-peers.sh: the request body,
percentiles, and the CPU time and peak RSS of the current process.

Standard library only. Linux only, because CPU time and peak RSS come from /proc/self.
"""

import json
import os

BODY = {
    "model": "fixed-delay",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Say ok."},
    ],
    "max_tokens": 8,
    "temperature": 0.0,
}

# The body infphys sends for ChatRequest::streaming(): the same request with stream set and usage
# asked for in the last chunk.
STREAM_BODY = dict(BODY, stream=True, stream_options={"include_usage": True})


def request_body(stream):
    """Return the chat-completion body to send, streaming or not."""
    return STREAM_BODY if stream else BODY


def text_of_sse_lines(lines):
    """Join the content deltas of a chat-completion event stream.

    ``lines`` are the decoded lines of the body. Returns (text, done), where done is whether
    ``data: [DONE]`` arrived. Raises ValueError for a data line that is not JSON.
    """
    parts = []
    done = False
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            done = True
            continue
        for choice in json.loads(data).get("choices", []):
            content = choice.get("delta", {}).get("content")
            if content:
                parts.append(content)
    return "".join(parts), done


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


def result_line(tool, stream, concurrency, requests, results, wall_s, cpu_s):
    """Build the JSON line that every load generator of the benchmark prints.

    ``results`` are (latency in seconds, error message or None) pairs of the timed requests.
    """
    latencies = [latency for latency, error in results if error is None]
    errors = [error for _, error in results if error is not None]
    return {
        "tool": tool,
        "stream": stream,
        "concurrency": concurrency,
        "requests": requests,
        "ok": len(latencies),
        "err": len(errors),
        "p50_s": percentile(latencies, 50.0),
        "p99_s": percentile(latencies, 99.0),
        "wall_s": wall_s,
        "rps": len(results) / wall_s,
        "cpu_s": cpu_s,
        "peak_rss_kib": peak_rss_kib(),
        "sample_error": errors[0] if errors else None,
    }
