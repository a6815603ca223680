"""Helpers to run the app with ``streamlit run`` and drive it in headless Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from skin_model import REPO_ROOT

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium_path() -> str | None:
    """Debian's Chromium, or ``$CHROMIUM_PATH``, if installed."""
    env = os.environ.get("CHROMIUM_PATH")
    if env and Path(env).is_file():
        return env
    found = [p for p in CHROMIUM_CANDIDATES if Path(p).is_file()]
    return found[0] if found else shutil.which("chromium")


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(env: dict | None = None, log_path: Path | None = None, timeout: float = 120):
    """Run ``streamlit run streamlit_app.py`` on 127.0.0.1; yield its URL.

    Args:
        env: Extra environment variables.
        log_path: Where the server's stdout/stderr go (default: discarded).
        timeout: Seconds to wait for the health check.
    """
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(REPO_ROOT / "streamlit_app.py"),
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("streamlit server did not start")
            time.sleep(0.5)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log_path:
            log.close()


def launch_browser(playwright):
    """Headless Debian Chromium driven by Playwright (no Playwright browser download)."""
    return playwright.chromium.launch(
        executable_path=chromium_path(),
        headless=True,
        args=["--no-sandbox", "--disable-dev-shm-usage"],
    )


def upload_and_wait(page, files: list[dict], timeout_ms: int = 120_000) -> None:
    """Upload in-memory files on the Classify page; wait for every case to finish."""
    page.locator("input[type=file]").first.set_input_files(files)
    page.get_by_text("Download results (CSV)").wait_for(timeout=timeout_ms)
    page.wait_for_function(
        "n => document.querySelectorAll('[data-testid=stImage] img').length >= n",
        arg=2,
        timeout=timeout_ms,
    )


def settle(page, timeout_ms: int = 120_000) -> None:
    """Wait until the app has finished its current run (no "Running..." indicator)."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=timeout_ms
    )
    page.wait_for_timeout(300)


def download(page, label: str, attempts: int = 3, timeout_ms: int = 60_000):
    """Click the download button ``label`` and return the download; click again if none
    starts (a click that lands while the page is re-rendering after a rerun can be lost,
    and a person would click again too).
    """
    for attempt in range(attempts):
        settle(page)
        try:
            with page.expect_download(timeout=timeout_ms) as info:
                page.get_by_text(label).click()
            return info.value
        except Exception:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
