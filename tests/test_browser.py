"""Real browser: ``streamlit run`` + headless Chromium. Upload, wait for the diagnosis and
the Grad-CAM overlay, screenshot every page; and prove no uploaded byte reaches disk or logs.
"""

import os
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from skin_model import REPO_ROOT
from tests.browser import chromium_path, launch_browser, streamlit_server, upload_and_wait
from tests.conftest import jpeg_bytes, lesion_image, skip_or_fail

pytestmark = pytest.mark.browser
try:
    import playwright.sync_api as playwright_api
except ImportError:
    skip_or_fail("playwright is not installed (pip install -r requirements-dev.txt)")
if chromium_path() is None:
    skip_or_fail("Debian chromium not installed (apt-get install chromium)")

PAGES = [
    ("", "Classify a skin lesion", "classify"),
    ("metrics", "Model metrics", "metrics"),
    ("training", "Training curves", "training"),
    ("about", "About this model", "about"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "server.log"
    with streamlit_server(log_path=log) as (url, proc):
        yield url, proc, log


def test_upload_shows_diagnosis_overlay_and_every_page_renders(server, tmp_path):
    url, _, _ = server
    shots = Path(os.environ.get("SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    image = REPO_ROOT.parent / "shared/data/ham10000/images/ISIC_0024306.jpg"
    data = image.read_bytes() if image.is_file() else jpeg_bytes(lesion_image("nv", 0))
    with playwright_api.sync_playwright() as p:
        browser = launch_browser(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1700})
        for path, title, name in PAGES:
            page.goto(f"{url}/{path}")
            page.get_by_role("heading", name=title).wait_for(timeout=120_000)
            if name == "classify":
                start = time.perf_counter()
                upload_and_wait(
                    page, [{"name": "lesion.jpg", "mimeType": "image/jpeg", "buffer": data}]
                )
                page.get_by_text("Malignant risk (mel + bcc + akiec)").first.wait_for()
                print(f"upload to overlay: {time.perf_counter() - start:.2f}s")
                # both images (original and overlay) decoded and drawn
                page.wait_for_function(
                    "() => { const imgs = [...document.querySelectorAll("
                    "'[data-testid=stImage] img')]; return imgs.length >= 2 && "
                    "imgs.every(i => i.complete && i.naturalWidth > 0); }",
                    timeout=60_000,
                )
                page.wait_for_timeout(500)
            else:
                page.wait_for_timeout(1500)
            assert page.get_by_text("This app has encountered an error").count() == 0
            page.screenshot(path=str(shots / f"{name}.png"), full_page=name != "classify")
        browser.close()


def _new_files_containing(roots, since: float, needle: bytes) -> list[str]:
    hits = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in (".git", "proc")]
            for name in filenames:
                path = os.path.join(dirpath, name)
                try:
                    st = os.stat(path)
                    if st.st_mtime < since or st.st_size > 200 * 2**20 or not os.path.isfile(path):
                        continue
                    with open(path, "rb") as fh:
                        if needle in fh.read():
                            hits.append(path)
                except OSError:
                    continue
    return hits


def test_uploaded_image_never_reaches_disk_or_logs(server):
    url, _, log = server
    name = f"patient-{uuid.uuid4().hex[:12]}.jpg"
    data = jpeg_bytes(lesion_image("mel", int(time.time()) % 10_000))
    needle = data[len(data) // 2 : len(data) // 2 + 512]
    since = time.time() - 1
    with playwright_api.sync_playwright() as p:
        browser = launch_browser(p)
        page = browser.new_page()
        page.goto(url)
        page.get_by_role("heading", name="Classify a skin lesion").wait_for(timeout=120_000)
        upload_and_wait(page, [{"name": name, "mimeType": "image/jpeg", "buffer": data}])
        page.get_by_role("heading", name=name).wait_for()
        browser.close()
    roots = [REPO_ROOT, tempfile.gettempdir(), str(Path.home())]
    assert _new_files_containing(roots, since, needle) == []
    assert name.encode() not in log.read_bytes()
