"""Interrupt a measuring cell in a real Rust kernel, then recover its rows in the next cell.

evcxr handles a Jupyter interrupt by killing the process that runs the cells, so every variable
is lost. This check starts the kernel in the notebooks folder, runs a long sweep with the
notebook client (which journals each finished request), interrupts it once a few rows are on
disk, and then runs `infphys::notebook::recover()` in a fresh cell. It prints PASS or FAIL lines
for: the interrupt ends the cell, recover() finds the rows, and the sweep's run is partial.

Usage: interrupt.py NOTEBOOK_DIR JOURNAL_DIR
Environment: NIM_BASE_URL=sim and INFPHYS_TIME_SCALE, as the notebook tests set them.
"""

import os
import pathlib
import queue
import sys
import time

from jupyter_client.manager import KernelManager

KERNEL = "rust"
# Bounds in seconds: compiling the first cell against the warm build, waiting for journal rows,
# and every other reply.
FIRST_CELL_TIMEOUT_S = 600
ROWS_TIMEOUT_S = 300
REPLY_TIMEOUT_S = 300
# Rows the sweep must have journaled before the interrupt.
ROWS_BEFORE_INTERRUPT = 5
PLANNED_REQUESTS = 100_000

SETUP = """:opt 0
:cache 4000
:dep infphys = { path = "../crates/infphys" }
"""

SWEEP = f"""let target = infphys::blocking::target_from_env()?;
let client = infphys::notebook::client(&target)?;
let request = infphys::LabParams::default().base_request(std::time::Duration::from_secs(60));
infphys::blocking::sweep(&client, &[4, 8], {PLANNED_REQUESTS}, &request, infphys::Progress::Silent)?;
"""

RECOVER = """let recovered = infphys::notebook::recover()?;
println!("{}", recovered.describe());
"""


def run_cell(client, code: str, timeout: float) -> tuple[str, str]:
    """Runs `code` and returns its reply status and everything it printed."""
    msg_id = client.execute(code)
    printed = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return "timeout", "".join(printed)
        try:
            message = client.get_iopub_msg(timeout=min(left, 5))
        except queue.Empty:
            continue
        if message.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = message["msg_type"]
        content = message["content"]
        if kind == "stream":
            printed.append(content["text"])
        elif kind == "error":
            printed.append(f"{content.get('ename')}: {content.get('evalue')}\n")
        elif kind == "status" and content["execution_state"] == "idle":
            break
    reply = client.get_shell_msg(timeout=REPLY_TIMEOUT_S)
    return reply["content"]["status"], "".join(printed)


def journaled_rows(folder: pathlib.Path) -> int:
    return sum(
        path.read_text(errors="replace").count('"request_id"') for path in folder.glob("*.jsonl")
    )


def main() -> int:
    notebook_dir = pathlib.Path(sys.argv[1])
    journal_dir = pathlib.Path(sys.argv[2])
    journal_dir.mkdir(parents=True, exist_ok=True)
    for old in journal_dir.glob("*.jsonl"):
        old.unlink()
    env = dict(os.environ, INFPHYS_JOURNAL_DIR=str(journal_dir))

    manager = KernelManager(kernel_name=KERNEL)
    manager.start_kernel(cwd=str(notebook_dir), env=env)
    client = manager.client()
    client.start_channels()
    failures = 0

    def check(ok: bool, name: str, detail: str = "") -> None:
        nonlocal failures
        print(f"{'PASS' if ok else 'FAIL'} interrupt: {name}" + (f" ({detail})" if detail and not ok else ""))
        failures += 0 if ok else 1

    try:
        client.wait_for_ready(timeout=REPLY_TIMEOUT_S)
        status, printed = run_cell(client, SETUP, FIRST_CELL_TIMEOUT_S)
        check(status == "ok", "set-up cell runs", printed[-500:])

        sweep_id = client.execute(SWEEP)
        deadline = time.monotonic() + ROWS_TIMEOUT_S
        while journaled_rows(journal_dir) < ROWS_BEFORE_INTERRUPT and time.monotonic() < deadline:
            time.sleep(0.2)
        rows_before = journaled_rows(journal_dir)
        check(rows_before >= ROWS_BEFORE_INTERRUPT, "the sweep journals rows", f"{rows_before} rows")
        manager.interrupt_kernel()

        # The interrupted cell must end well before its 100,000 requests would.
        ended = False
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                reply = client.get_shell_msg(timeout=5)
            except queue.Empty:
                continue
            if reply.get("parent_header", {}).get("msg_id") == sweep_id:
                ended = True
                break
        check(ended, "the interrupt ends the measuring cell")

        status, printed = run_cell(client, SETUP + "\n" + RECOVER, FIRST_CELL_TIMEOUT_S)
        check(status == "ok", "recover() runs in the next cell", printed[-500:])
        check("recovered" in printed and "rows" in printed, "recover() reports the rows", printed[-500:])
        check(
            f"partial: c=4 (" in printed and f"of {PLANNED_REQUESTS} requests)" in printed,
            "the interrupted run is marked partial",
            printed[-500:],
        )
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
