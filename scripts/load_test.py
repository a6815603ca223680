"""Bounded load test: N clinicians at once against ``streamlit run`` on 127.0.0.1, then
one clinician after another.

Each of N headless Chromium sessions uploads a different HAM10000 image at the same time.
Checks: every session shows the same diagnosis and probability as the CLI for its file,
no session shows another session's file, and the server survives. Prints per-session
latency (upload to overlay, p50/p95) and the server's peak memory for each N.

``--sequential M`` then runs M sessions one after another on a fresh server (each
uploads, waits for its result and closes its tab) and records the first visit (server
start to a usable Classify page) and the server's resident memory after each session:
a session's cases must be freed when it ends, so memory after the last session stays
within 100 MB of memory after the fifth.

    .venv/bin/python scripts/load_test.py --sessions 4 8 20 --sequential 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from skin_model import DEFAULT_DATA_DIR, DEFAULT_MODEL_DIR
from tests.browser import chromium_path, streamlit_server


def server_peak_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of the server process in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def server_rss_mb(pid: int) -> float:
    """Current resident memory (VmRSS) of the server process in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cli_expectations(files: list[Path]) -> dict[str, str]:
    """Expected headline per file name, from the CLI code path at the app's default
    clinic prevalence.
    """
    from skin_model.runtime.advice import DEFAULT_PRESET, PRESETS, pct
    from skin_model.runtime.inference import load_bundle
    from skin_model.runtime.predict import predict_files

    rows = predict_files(
        load_bundle(DEFAULT_MODEL_DIR), files, prevalence=PRESETS[DEFAULT_PRESET][1]
    )
    return {
        f.name: f"Most likely: {r['most_likely']}, {pct(float(r['most_likely_probability']))}"
        for f, r in zip(files, rows, strict=True)
    }


async def one_session(browser, url: str, file: Path, all_names: list[str]) -> dict:
    """Upload one file in a fresh browser context; return latency and what it showed."""
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(url)
    await page.get_by_role("heading", name="Classify a skin lesion").wait_for(timeout=300_000)
    # The uploader appears once the shared model is loaded (first session only).
    await page.locator("input[type=file]").first.wait_for(state="attached", timeout=300_000)
    start = time.perf_counter()
    await page.locator("input[type=file]").first.set_input_files(
        [{"name": file.name, "mimeType": "image/jpeg", "buffer": file.read_bytes()}]
    )
    await page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=stImage] img').length >= 2",
        timeout=300_000,
    )
    latency = time.perf_counter() - start
    shown = await page.locator(
        "[data-testid=stMarkdownContainer] strong", has_text="Most likely:"
    ).first.inner_text()
    headings = await page.get_by_role("heading").all_inner_texts()
    foreign = [n for n in all_names if n != file.name and n in headings]
    await context.close()
    return {"file": file.name, "latency_s": latency, "shown": shown, "foreign": foreign}


async def run_round(url: str, files: list[Path]) -> list[dict]:
    """All sessions at once."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=chromium_path(), headless=True, args=["--no-sandbox"]
        )
        names = [f.name for f in files]
        results = await asyncio.gather(*(one_session(browser, url, f, names) for f in files))
        await browser.close()
    return list(results)


async def run_sequential(url: str, files: list[Path], pid: int, started: float) -> dict:
    """One session after another; the first visit and memory after each session."""
    from playwright.async_api import async_playwright

    names = [f.name for f in files]
    rss, latencies, seen = [], [], []
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=chromium_path(), headless=True, args=["--no-sandbox"]
        )
        first = await browser.new_page()
        await first.goto(url)
        await first.locator("input[type=file]").first.wait_for(state="attached", timeout=300_000)
        first_visit = time.perf_counter() - started
        await first.close()
        for f in files:
            r = await one_session(browser, url, f, names)
            await asyncio.sleep(1.0)  # the server notices the closed tab
            rss.append(server_rss_mb(pid))
            latencies.append(r["latency_s"])
            seen.append((r["file"], r["shown"], bool(r["foreign"])))
        await browser.close()
    return {"first_visit_s": first_visit, "rss": rss, "latency": latencies, "seen": seen}


def sequential_report(files: list[Path], expected: dict) -> dict:
    """Run :func:`run_sequential` on a fresh server and summarise it."""
    started = time.perf_counter()
    with streamlit_server() as (url, proc):
        out = asyncio.run(run_sequential(url, files, proc.pid, started))
        alive = proc.poll() is None
    rss = out["rss"]
    fifth = rss[min(4, len(rss) - 1)]
    return {
        "sessions": len(files),
        "first_visit_s": round(out["first_visit_s"], 2),
        "rss_after_session_mb": [round(v, 1) for v in rss],
        "rss_after_5th_mb": round(fifth, 1),
        "rss_after_last_mb": round(rss[-1], 1),
        "growth_after_5th_mb": round(rss[-1] - fifth, 1),
        "max_growth_after_5th_mb": round(max(rss[4:] or rss) - fifth, 1),
        "latency_p50_s": round(float(np.percentile(out["latency"], 50)), 2),
        "correct": sum(shown == expected[f] for f, shown, _ in out["seen"]),
        "cross_session_leaks": sum(foreign for *_, foreign in out["seen"]),
        "server_alive": alive,
    }


def main() -> int:
    """Run the rounds and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, nargs="*", default=[4, 8, 20])
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("HAM10000_DIR", DEFAULT_DATA_DIR))
    )
    parser.add_argument("--out", type=Path, default=Path("load_test.json"))
    parser.add_argument(
        "--sequential", type=int, default=0, help="then M sessions one after another (0: none)"
    )
    parser.add_argument(
        "--sequential-out", type=Path, default=Path("load_sessions.json"), help="its JSON"
    )
    args = parser.parse_args()
    n_files = max([*args.sessions, args.sequential])
    pool = sorted((args.data_dir / "images").glob("*.jpg"))[:n_files]
    expected = cli_expectations(pool)
    report = []
    ok = True
    for n in args.sessions:
        files = pool[:n]
        with streamlit_server() as (url, proc):
            results = asyncio.run(run_round(url, files))
            alive = proc.poll() is None
            peak = server_peak_mb(proc.pid)
        lat = np.array([r["latency_s"] for r in results])
        correct = sum(r["shown"] == expected[r["file"]] for r in results)
        leaks = sum(bool(r["foreign"]) for r in results)
        row = {
            "sessions": n,
            "p50_s": round(float(np.percentile(lat, 50)), 2),
            "p95_s": round(float(np.percentile(lat, 95)), 2),
            "correct": correct,
            "cross_session_leaks": leaks,
            "server_alive": alive,
            "server_peak_mb": round(peak, 1),
        }
        for r in results:
            if r["shown"] != expected[r["file"]]:
                print(f"  MISMATCH {r['file']}: app {r['shown']!r} vs CLI {expected[r['file']]!r}")
        ok &= correct == n and leaks == 0 and alive
        report.append(row)
        print(json.dumps(row))
    print("\n| sessions | latency p50 (s) | p95 (s) | correct vs CLI | leaks | server peak RSS |")
    print("|---|---|---|---|---|---|")
    for r in report:
        print(
            f"| {r['sessions']} | {r['p50_s']} | {r['p95_s']} | {r['correct']}/{r['sessions']} "
            f"| {r['cross_session_leaks']} | {r['server_peak_mb']} MB |"
        )
    if report:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    if args.sequential:
        seq = sequential_report(pool[: args.sequential], expected)
        print(json.dumps({k: v for k, v in seq.items() if k != "rss_after_session_mb"}))
        args.sequential_out.write_text(json.dumps(seq, indent=1) + "\n")
        ok &= (
            seq["correct"] == seq["sessions"]
            and seq["cross_session_leaks"] == 0
            and seq["server_alive"]
            and seq["growth_after_5th_mb"] <= 100
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
