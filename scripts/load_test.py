"""Bounded load test: N clinicians at once against ``streamlit run`` on 127.0.0.1.

Each of N headless Chromium sessions uploads a different HAM10000 image at the same time.
Checks: every session shows the same diagnosis and probability as the CLI for its file,
no session shows another session's file, and the server survives. Prints per-session
latency (upload to overlay, p50/p95) and the server's peak memory for each N.

    .venv/bin/python scripts/load_test.py --sessions 4 8 20
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
        "[data-testid=stMarkdownContainer]", has_text="Most likely:"
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


def main() -> int:
    """Run the rounds and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[4, 8, 20])
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("HAM10000_DIR", DEFAULT_DATA_DIR))
    )
    parser.add_argument("--out", type=Path, default=Path("load_test.json"))
    args = parser.parse_args()
    pool = sorted((args.data_dir / "images").glob("*.jpg"))[: max(args.sessions)]
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
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
