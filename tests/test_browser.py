"""Real browser: ``streamlit run`` + headless Chromium, driven as a clinician would. A
transparent-corner melanoma keeps its referral verdict; a blurred image gets the retake
message; the camera stays off until asked; moving between pages keeps the case, with text
typed but never confirmed (on a laptop and on a phone) and a choice made while the page
was still working; names with formula, Markdown or maths characters stay plain text (and
the CSV cell escaped); a double click on "Remove this case" removes that case only; the
PDF report downloads, also on two quick clicks, and names verdict, tier and date; no
uploaded byte reaches disk or logs. Screenshots of every page at desktop and phone size
(``SCREENSHOT_DIR``). A failed test prints the page's run state, its text fields and the
server log's end.
"""

import datetime as dt
import io
import os
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skin_model import DEFAULT_DATA_DIR, DEFAULT_MODEL_DIR, REPO_ROOT
from tests.browser import (
    chromium_path,
    download,
    launch_browser,
    settle,
    streamlit_server,
    upload_and_wait,
)
from tests.conftest import jpeg_bytes, lesion_image, png_bytes, skip_or_fail

pytestmark = pytest.mark.browser
try:
    import playwright.sync_api as playwright_api
except ImportError:
    skip_or_fail("playwright is not installed (pip install -r requirements-dev.txt)")
if chromium_path() is None:
    skip_or_fail("Debian chromium not installed (apt-get install chromium)")

DESKTOP = {"width": 1400, "height": 1000}
PHONE = {"width": 390, "height": 844}
PAGES = [
    ("Classify", "Classify a skin lesion", "classify"),
    ("Model metrics", "Model metrics", "metrics"),
    ("Training curves", "Training curves", "training"),
    ("About this model", "About this model", "about"),
]
REFERENCE = "Case reference (optional, printed on the report)"
COUNT_CAMERA = """
window.__cameraCalls = 0;
if (navigator.mediaDevices) {
  const original = navigator.mediaDevices.getUserMedia?.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = (c) => { window.__cameraCalls += 1;
    return original ? original(c) : Promise.reject(new Error('no camera')); };
}
"""

COUNT_RUNS = """() => {
  window.__runs = 0;
  const app = document.querySelector('[data-test-script-state]');
  new MutationObserver(() => {
    if (app.getAttribute('data-test-script-state') === 'running') window.__runs += 1;
  }).observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
}"""
"""Counts the app's runs from now on in ``window.__runs``."""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "server.log"
    with streamlit_server(log_path=log) as (url, proc):
        yield url, proc, log
    # the suite fails on any uncaught exception the server logged while it ran
    text = log.read_text(errors="replace")
    assert "Traceback" not in text and "Uncaught" not in text, text[-4000:]


@pytest.fixture()
def page(server, request, tmp_path):
    with playwright_api.sync_playwright() as p:
        browser = launch_browser(p)
        viewport = getattr(request, "param", DESKTOP)  # indirect parametrisation: PHONE
        context = browser.new_context(viewport=viewport, accept_downloads=True)
        context.add_init_script(COUNT_CAMERA)
        tab = context.new_page()
        tab.goto(server[0])
        tab.get_by_role("heading", name="Classify a skin lesion").wait_for(timeout=120_000)
        yield tab
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(failure_evidence(tab, server[2], tmp_path / "failed.png"))
        browser.close()


FIELDS_NOW = """() => [...document.querySelectorAll(
    '[data-testid=stTextInput], [data-testid=stTextArea]')].map(box => {
    const label = box.querySelector('label')?.innerText || '';
    const value = box.querySelector('input, textarea')?.value;
    const hint = box.querySelector('[data-testid=InputInstructions]')?.innerText || '';
    const waiting = hint.includes('Enter to apply') ? ' (not applied)' : '';
    return `${label}: ${JSON.stringify(value)}${waiting}`;
})"""


def failure_evidence(tab, server_log: Path, shot: Path) -> str:
    """What a failed browser test leaves in the log: the app's run state, every text
    field's value (and whether it still waits to be applied), a screenshot's path and the
    server log's end (no uploaded bytes are logged, so the log is safe to print).
    """
    lines = ["--- browser state at the failure ---"]
    try:
        state = tab.evaluate(
            "() => document.querySelector('[data-test-script-state]')"
            "?.getAttribute('data-test-script-state')"
        )
        folded = tab.evaluate(
            "() => document.querySelector('[data-testid=stSidebar]')"
            "?.getAttribute('data-collapsed')"
        )
        lines += [f"script state: {state}", f"sidebar folded: {folded}", *tab.evaluate(FIELDS_NOW)]
        tab.screenshot(path=str(shot), full_page=True)
        lines.append(f"screenshot: {shot}")
    except Exception as exc:  # the page may be gone: say so, keep the test's own error
        lines.append(f"page unreadable: {exc!r}")
    tail = server_log.read_text(errors="replace").splitlines()[-30:] if server_log.is_file() else []
    return "\n".join([*lines, "--- server log (end) ---", *tail])


def _ham(image_id: str) -> np.ndarray:
    data = Path(os.environ.get("HAM10000_DIR", DEFAULT_DATA_DIR)) / "images" / f"{image_id}.jpg"
    return np.asarray(Image.open(io.BytesIO(data.read_bytes())).convert("RGB"))


def _riskiest_test_melanoma() -> str:
    """The shipped model's test melanoma with the highest malignant risk."""
    preds = pd.read_csv(DEFAULT_MODEL_DIR / "test_predictions.csv")
    mel = preds[preds["dx"] == "mel"]
    return mel.loc[(mel["mel"] + mel["bcc"] + mel["akiec"]).idxmax(), "image_id"]


SAME_ORDER_CASES = [("mel", "ISIC_0024310"), ("nv", "ISIC_0024306"), ("bkl", "ISIC_0027419")]
"""Three HAM10000 images (a melanoma, a naevus, a benign keratosis) uploaded together."""


def _ham_bytes(image_id: str) -> bytes:
    path = Path(os.environ.get("HAM10000_DIR", DEFAULT_DATA_DIR)) / "images" / f"{image_id}.jpg"
    return path.read_bytes()


def _file(name: str, data: bytes, mime: str = "image/jpeg") -> dict:
    return {"name": name, "mimeType": mime, "buffer": data}


def _case_text(page) -> str:
    return page.locator("[data-testid=stMain]").inner_text()


def _csv(page) -> pd.DataFrame:
    csv = download(page, "Download results (CSV)")
    return pd.read_csv(csv.path(), dtype=str, keep_default_na=False)


def test_transparent_corner_melanoma_shows_its_referral_verdict(page, real_data_dir):
    image = _ham(_riskiest_test_melanoma())
    h, w = image.shape[:2]
    yy, xx = np.ogrid[:h, :w]
    inside = ((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2 <= 1
    rgba = np.dstack([image, np.where(inside, 255, 0).astype(np.uint8)])
    data = png_bytes(Image.fromarray(rgba, mode="RGBA"))
    upload_and_wait(page, [_file("corners.png", data, "image/png")])
    assert ": refer." in _case_text(page)  # the verdict, whatever warning stands beside it
    assert _csv(page)["refer"].iloc[0] == "yes"  # and in the results file


def test_blurred_image_gets_the_retake_message(page, real_data_dir):
    from skin_model.data.quality import degrade

    blurred = degrade(_ham(_riskiest_test_melanoma()), "blurred")
    upload_and_wait(page, [_file("blurred.jpg", jpeg_bytes(blurred))])
    text = _case_text(page)
    assert "looks blurred. Retake it" in text
    assert "threshold" in text  # the verdict still stands beside the warning


def test_camera_is_off_until_asked(page):
    page.wait_for_timeout(1500)
    assert page.locator("[data-testid=stCameraInput]").count() == 0
    assert page.evaluate("window.__cameraCalls") == 0
    page.get_by_text("Take a photo with this device's camera").click()
    page.locator("[data-testid=stCameraInput]").wait_for(timeout=30_000)


def test_moving_between_pages_keeps_the_case(page):
    upload_and_wait(page, [_file("kept-case.jpg", jpeg_bytes(lesion_image("bkl", 8)))])
    page.get_by_label(REFERENCE).fill("ward 3")
    page.keyboard.press("Enter")
    settle(page)
    # applied before leaving: the field still shows it and no longer asks for Enter
    assert f'{REFERENCE}: "ward 3"' in page.evaluate(FIELDS_NOW)
    page.get_by_role("link", name="Model metrics").click()
    page.get_by_role("heading", name="Model metrics").wait_for(timeout=60_000)
    page.get_by_role("link", name="Classify").click()
    page.get_by_role("heading", name="kept-case.jpg").wait_for(timeout=60_000)
    field = page.get_by_label("Case reference (optional, printed on the report)")
    assert field.input_value() == "ward 3"


def test_text_typed_without_enter_survives_leaving_by_the_sidebar(page):
    upload_and_wait(page, [_file("unconfirmed.jpg", jpeg_bytes(lesion_image("bkl", 13)))])
    settle(page)
    page.get_by_label("Notes (optional, printed on the report)").fill("typed, never confirmed")
    page.get_by_label("Case reference (optional, printed on the report)").fill("bed 12")
    # no Enter, no click elsewhere: straight to another page by the sidebar
    page.get_by_role("link", name="About this model").click()
    page.get_by_role("heading", name="About this model").wait_for(timeout=60_000)
    page.get_by_role("link", name="Classify").click()
    page.get_by_role("heading", name="unconfirmed.jpg").wait_for(timeout=60_000)
    settle(page)
    notes = page.get_by_label("Notes (optional, printed on the report)")
    assert notes.input_value() == "typed, never confirmed"
    assert page.get_by_label("Case reference (optional, printed on the report)").input_value() == (
        "bed 12"
    )


@pytest.mark.parametrize("page", [PHONE], indirect=True, ids=["phone"])
def test_text_typed_on_a_phone_survives_leaving_by_the_sidebar(page):
    """On a phone the sidebar is folded: typing, then opening it and following a link."""
    upload_and_wait(page, [_file("on-the-ward.jpg", jpeg_bytes(lesion_image("bkl", 14)))])
    settle(page)
    page.get_by_label("Notes (optional, printed on the report)").fill("seen on the ward")
    page.get_by_label(REFERENCE).fill("bed 7")
    for name, heading in (
        ("About this model", "About this model"),
        ("Classify", "on-the-ward.jpg"),
    ):
        page.locator("[data-testid=stExpandSidebarButton]").first.click()
        page.get_by_role("link", name=name).click()
        page.get_by_role("heading", name=heading).wait_for(timeout=60_000)
    settle(page)
    fields = page.evaluate(FIELDS_NOW)
    assert 'Notes (optional, printed on the report): "seen on the ward"' in fields, fields
    assert f'{REFERENCE}: "bed 7"' in fields, fields


def test_a_site_chosen_while_the_page_runs_survives_leaving_by_the_sidebar(page):
    """A choice made while another run is going on waits on the server behind it; leaving
    at once must not drop it (nor the note whose run it waited behind)."""
    upload_and_wait(page, [_file("chosen-site.jpg", jpeg_bytes(lesion_image("bkl", 15)))])
    settle(page)
    page.get_by_label("Notes (optional, printed on the report)").fill("left shoulder blade")
    page.keyboard.press("Enter")  # a run starts; the site is chosen while it goes on
    page.locator("[data-testid=stSelectbox]").filter(has_text="Body site").click()
    page.get_by_role("option", name="Back", exact=True).click()
    page.get_by_role("link", name="Training curves").click()
    page.get_by_role("heading", name="Training curves").wait_for(timeout=60_000)
    page.get_by_role("link", name="Classify").click()
    page.get_by_role("heading", name="chosen-site.jpg").wait_for(timeout=60_000)
    settle(page)
    site = page.locator("[data-testid=stSelectbox]").filter(has_text="Body site")
    assert site.locator("input").input_value() == "Back"
    fields = page.evaluate(FIELDS_NOW)
    assert 'Notes (optional, printed on the report): "left shoulder blade"' in fields, fields


def test_new_patient_right_after_typing_leaves_a_clean_page(page):
    upload_and_wait(page, [_file("patient-a.jpg", jpeg_bytes(lesion_image("nv", 31)))])
    settle(page)
    page.get_by_label("Notes (optional, printed on the report)").fill("patient A's notes")
    page.get_by_label("Case reference (optional, printed on the report)").fill("A-1")
    page.get_by_text("New patient: clear every image, detail and note").click()  # no Enter
    page.get_by_text("Upload one or more dermoscopic images").wait_for(timeout=60_000)
    settle(page)
    assert "patient-a.jpg" not in _case_text(page) and "A-1" not in _case_text(page)
    upload_and_wait(page, [_file("patient-b.jpg", jpeg_bytes(lesion_image("bkl", 32)))])
    settle(page)
    assert page.get_by_label("Notes (optional, printed on the report)").input_value() == ""
    assert page.get_by_label("Case reference (optional, printed on the report)").input_value() == ""
    rows = _csv(page)
    assert rows["file"].tolist() == ["patient-b.jpg"] and set(rows["notes"]) == {""}


def _first_bars_and_headlines(page) -> tuple[list[str], list[str]]:
    """Each case's top bar in its differential chart (the SVG's topmost class label) and
    its headline's class, in page order."""
    bars = page.evaluate(
        """() => [...document.querySelectorAll('[data-testid=stVegaLiteChart]')].map(c => {
            const labels = [...c.querySelectorAll('.role-axis-label text')]
              .filter(t => t.textContent.includes('('));
            labels.sort((a, b) => a.getBoundingClientRect().top - b.getBoundingClientRect().top);
            return labels.length ? labels[0].textContent : '';
        })"""
    )
    heads = page.locator("[data-testid=stMarkdownContainer] strong", has_text="Most likely:")
    names = [h.split("Most likely: ", 1)[1].rsplit(",", 1)[0] for h in heads.all_inner_texts()]
    return bars, names


def test_the_first_bar_is_the_headline_after_remove_combine_and_clinic_change(page):
    files = [_file(f"{dx}-case.jpg", _ham_bytes(i)) for dx, i in SAME_ORDER_CASES]
    upload_and_wait(page, files)
    _assert_top_bars_are_headlines(page, 3)
    page.get_by_role("button", name="Remove this case").nth(1).click()
    _assert_top_bars_are_headlines(page, 2)
    page.get_by_text("Dermatology clinic (like the training data)").click()
    _assert_top_bars_are_headlines(page, 2)
    page.get_by_text("Several images of the same lesion?").click()
    settle(page)
    _combine(page, ["mel-case.jpg", "bkl-case.jpg"])
    _assert_top_bars_are_headlines(page, 1)


def test_remove_clicked_twice_removes_one_case(page):
    """A double click on one case's "Remove this case" removes that case only: the second
    click, held while the first one's run redraws the page, never lands on the next case's
    button.
    """
    files = [_file(f"{dx}-case.jpg", _ham_bytes(i)) for dx, i in SAME_ORDER_CASES[:2]]
    upload_and_wait(page, files)
    settle(page)
    page.evaluate(
        """() => { const b = [...document.querySelectorAll('button')]
            .find(x => x.innerText.includes('Remove this case'));
          b.click(); setTimeout(() => b.click(), 400); }"""
    )
    page.wait_for_timeout(500)
    settle(page)
    page.wait_for_timeout(2000)  # a held second click would be replayed by now
    settle(page)
    assert page.get_by_role("button", name="Remove this case").count() == 1
    assert page.get_by_role("heading", name="nv-case.jpg").count() == 1
    assert page.get_by_role("heading", name="mel-case.jpg").count() == 0


def _combine(page, names: list[str], attempts: int = 3) -> None:
    """Choose ``names`` in the combine list and press "Combine into one case"; as a person
    would, choose again what a rerun dropped and press again if the click was lost (the
    page still shows more than one chart).
    """
    charts = page.locator("[data-testid=stVegaLiteChart]")
    before = charts.count()
    for attempt in range(attempts):
        settle(page)
        tags = page.locator("[data-testid=stMultiSelectTagsContainer] [data-tag]")
        chosen = tags.all_inner_texts()
        for name in (n for n in names if not any(n in c for c in chosen)):
            _pick_option(page, name)
        page.keyboard.press("Escape")
        settle(page)
        page.get_by_role("button", name="Combine into one case").click()
        try:
            page.wait_for_function(
                "n => document.querySelectorAll('[data-testid=stVegaLiteChart]').length < n",
                arg=before,
                timeout=20_000,
            )
            return
        except Exception:
            if attempt == attempts - 1:
                raise


def _pick_option(page, name: str, attempts: int = 3) -> None:
    """Open the multiselect and choose ``name``; open it again if a rerun closed the list
    (as a person would)."""
    option = page.get_by_role("option", name=name)
    for attempt in range(attempts):
        settle(page)
        page.locator("[data-testid=stMultiSelect]").click()
        try:
            option.click(timeout=10_000)
            return
        except Exception:
            if attempt == attempts - 1:
                raise


def _assert_top_bars_are_headlines(page, cases: int) -> None:
    """Once the page shows ``cases`` charts, each chart's top bar is its case's headline."""
    page.wait_for_function(
        "n => document.querySelectorAll('[data-testid=stVegaLiteChart]').length == n",
        arg=cases,
        timeout=60_000,
    )
    settle(page)
    page.wait_for_timeout(1000)
    bars, heads = _first_bars_and_headlines(page)
    assert len(bars) == cases and bars == heads, (bars, heads)


def test_a_pdf_downloaded_right_after_typing_has_the_notes(page):
    from pypdf import PdfReader

    upload_and_wait(page, [_file("notes-case.jpg", jpeg_bytes(lesion_image("mel", 14)))])
    settle(page)
    page.get_by_label("Notes (optional, printed on the report)").fill("seen twice, growing")
    with page.expect_download(timeout=120_000) as info:
        page.get_by_text("Download report (PDF)").click()  # straight after typing
    text = " ".join(p.extract_text() for p in PdfReader(info.value.path()).pages)
    assert "seen twice, growing" in " ".join(text.split())


def test_user_strings_stay_plain_text_and_the_csv_cell_is_escaped(page):
    from pypdf import PdfReader

    name = '=HYPERLINK(x)**bold**:red[x]$x$ "q".jpg'
    upload_and_wait(page, [_file(name, jpeg_bytes(lesion_image("mel", 9)))])
    heading = page.get_by_role("heading", name=name)
    heading.wait_for(timeout=60_000)
    assert heading.locator("strong, .katex, span[style*=color]").count() == 0
    assert name in _case_text(page) and "%22" not in _case_text(page)
    captions = page.locator("[data-testid=stImageCaption]").all_inner_texts()
    assert name in captions  # the image's own caption, as named
    assert _csv(page)["file"].iloc[0] == "'" + name
    pdf = download(page, "Download report (PDF)")
    text = " ".join(p.extract_text() for p in PdfReader(pdf.path()).pages)
    assert name in " ".join(text.split())


def test_the_same_image_under_two_names_gives_two_cases(page):
    data = jpeg_bytes(lesion_image("nv", 41))
    upload_and_wait(page, [_file("left arm.jpg", data), _file("left arm copy.jpg", data)])
    page.get_by_role("heading", name="left arm copy.jpg").wait_for(timeout=60_000)
    settle(page)
    assert page.get_by_role("heading", name="left arm.jpg", exact=True).count() == 1
    page.wait_for_function(  # fails by timeout unless both cases get their result
        "() => [...document.querySelectorAll('button')]"
        ".filter(b => b.innerText.includes('Remove this case')).length == 2",
        timeout=60_000,
    )
    assert page.get_by_text("Case 2", exact=True).count() >= 1


def test_pdf_report_downloads_with_verdict_tier_and_date(page):
    from pypdf import PdfReader

    upload_and_wait(page, [_file("report-case.jpg", jpeg_bytes(lesion_image("mel", 10)))])
    page.get_by_label("Case reference (optional, printed on the report)").fill("R-17")
    page.keyboard.press("Enter")
    settle(page)
    # the PDF is drawn when clicked; a fresh machine first builds matplotlib's font cache
    pdf = download(page, "Download report (PDF)", timeout_ms=90_000)
    text = " ".join(p.extract_text() for p in PdfReader(pdf.path()).pages)
    text = " ".join(text.split())
    assert "risk:" in text.lower() and ("refer" in text.lower())
    assert any(tier in text for tier in ("Low risk", "Raised risk", "High risk"))
    assert dt.date.today().isoformat() in text and "R-17" in text
    assert "report-case.jpg" in text and "Not a medical device" in text


LAPTOP = {"width": 1366, "height": 768}


def test_a_pdf_clicked_twice_downloads_twice(page, server):
    """Two quick clicks on "Download report (PDF)" give two PDFs: a download click starts
    no run that would replace the file the second click asks for.
    """
    upload_and_wait(page, [_file("twice.jpg", jpeg_bytes(lesion_image("mel", 12)))])
    settle(page)
    downloads = []
    page.on("download", lambda d: downloads.append(d))
    page.evaluate(COUNT_RUNS)
    button = page.get_by_text("Download report (PDF)")
    button.click()
    page.wait_for_timeout(150)  # a person's second click, before the first file arrives
    button.click()
    deadline = time.time() + 120
    while len(downloads) < 2 and time.time() < deadline:
        page.wait_for_timeout(250)
    assert len(downloads) == 2, len(downloads)
    assert all(Path(d.path()).read_bytes().startswith(b"%PDF") for d in downloads)
    assert page.evaluate("() => window.__runs") == 0
    assert "Deferred file" not in server[2].read_text(errors="replace")


@pytest.mark.parametrize("viewport", [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_the_newest_verdict_is_in_view_and_nothing_scrolls_sideways(server, viewport):
    with playwright_api.sync_playwright() as p:
        browser = launch_browser(p)
        page = browser.new_page(viewport=viewport)
        page.goto(server[0])
        page.get_by_role("heading", name="Classify a skin lesion").wait_for(timeout=120_000)
        first = [_file("older.jpg", jpeg_bytes(lesion_image("nv", 21)))]
        upload_and_wait(page, first)
        page.locator("input[type=file]").first.set_input_files(
            [_file("newest.jpg", jpeg_bytes(lesion_image("mel", 22)))]
        )
        page.get_by_role("heading", name="newest.jpg").wait_for(timeout=120_000)
        settle(page)
        page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollTo(0, 0)")
        latest = page.locator(".st-key-latest")
        box = latest.bounding_box()
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"], box
        text = latest.inner_text()
        assert "Case 2" in text and "newest.jpg" in text and "risk" in text.lower()
        # the uploader is empty again (it fails by timeout if not): the cases list the images
        page.wait_for_function(
            "() => !document.querySelector('[data-testid=stFileChip]')", timeout=30_000
        )
        sideways = "() => { const m = document.querySelector('[data-testid=stMain]'); " + (
            "return m.scrollWidth - m.clientWidth; }"
        )
        assert page.evaluate(sideways) <= 1
        if viewport is PHONE:
            # one card per case instead of a table that would scroll sideways
            assert page.locator("[data-testid=stDataFrame]:visible").count() == 0
            cards = page.locator(".st-key-narrow_summary")
            assert "Case 1" in cards.inner_text() and "Case 2" in cards.inner_text()
            # the sidebar folds away once a page was chosen in it
            page.locator("[data-testid=stExpandSidebarButton]").first.click()
            page.get_by_role("link", name="Model metrics").click()
            page.get_by_role("heading", name="Model metrics").wait_for(timeout=60_000)
            settle(page)
            page.wait_for_timeout(800)
            page.wait_for_function(  # fails by timeout if the sidebar stays over the page
                "() => document.querySelector('[data-testid=stSidebar]')"
                ".getAttribute('data-collapsed') === 'true'",
                timeout=10_000,
            )
            assert page.evaluate(sideways) <= 1
            outside = "[data-testid=stDataFrame]:visible"
            assert (
                page.locator(outside).count()
                == page.locator(f"[data-testid=stExpander] {outside}").count()
            )  # tables only inside the machine-learning detail a reader opens
        browser.close()


def test_every_page_at_desktop_and_phone_size(server, tmp_path):
    url = server[0]
    shots = Path(os.environ.get("SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    image = Path(os.environ.get("HAM10000_DIR", DEFAULT_DATA_DIR)) / "images/ISIC_0024306.jpg"
    data = image.read_bytes() if image.is_file() else jpeg_bytes(lesion_image("nv", 0))
    with playwright_api.sync_playwright() as p:
        browser = launch_browser(p)
        for size, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            page = browser.new_page(viewport=viewport)
            page.goto(url)
            page.get_by_role("heading", name="Classify a skin lesion").wait_for(timeout=120_000)
            start = time.perf_counter()
            upload_and_wait(page, [_file("lesion.jpg", data)])
            print(f"{size}: upload to overlay {time.perf_counter() - start:.2f}s")
            for link, title, name in PAGES:
                if name != "classify" and size == "phone":
                    page.goto(f"{url}/{name}")  # the sidebar is folded away on a phone
                elif name != "classify":
                    page.get_by_role("link", name=link).click()
                page.get_by_role("heading", name=title).wait_for(timeout=60_000)
                settle(page)
                page.wait_for_timeout(1500)
                assert page.get_by_text("This app has encountered an error").count() == 0
                _whole_page(page, viewport, shots / f"{name}-{size}.png")
            page.close()
        browser.close()


def _whole_page(page, viewport: dict, path: Path) -> None:
    """Screenshot the whole page: the app scrolls inside its own container, so the window
    is made as tall as the content first (the width, which sets the layout, is kept)."""
    height = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll('[data-testid=stMain], "
        "[data-testid=stMainBlockContainer]')].map(e => e.scrollHeight))"
    )
    page.set_viewport_size({"width": viewport["width"], "height": min(int(height) + 80, 9000)})
    page.wait_for_timeout(800)
    page.screenshot(path=str(path))
    page.set_viewport_size(viewport)


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
        upload_and_wait(page, [_file(name, data)])
        page.get_by_role("heading", name=name).wait_for()
        browser.close()
    roots = [REPO_ROOT, tempfile.gettempdir(), str(Path.home())]
    assert _new_files_containing(roots, since, needle) == []
    assert name.encode() not in log.read_bytes()
