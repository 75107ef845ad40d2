"""The web page at `GET /` in a real browser: Debian's Chromium driven by Playwright for Python.

No browser download: Playwright launches `/usr/bin/chromium` (`apt-get install chromium`; `.ci/run`
installs it). Without it, or without the `playwright` package, the browser tests skip with a
message. A real uvicorn on 127.0.0.1 serves the tiny test models (`tests/modelkit.py`); the tests
click through generate, walk, arithmetic and score and assert on what the page shows. Screenshots
go to a temporary directory (or `$GANSERVE_WEB_SHOTS`).

The README's screenshot of the real default models: `python tests/test_web.py --readme-shot`
(writes docs/screenshot.png; needs models/mnist-cdcgan).
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from conftest import DEFAULT_TEST_MODEL, run_uvicorn  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
# No internet here: background networking would only flood refused connections.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_MS = 15_000


def _skip_reason() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is absent (apt-get install chromium; .ci/run installs it as root)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is absent (pip install -e '.[dev]')"
    return None


needs_browser = pytest.mark.skipif(_skip_reason() is not None, reason=f"web tests: {_skip_reason()}")


def _server(models_dir: Path, default_model: str | None, **overrides):
    from service.app import create_app
    from service.settings import Settings

    settings = Settings(models_dir=models_dir, default_model=default_model, **overrides)
    return run_uvicorn(create_app(settings))


@pytest.fixture(scope="module")
def base_url(model_root):
    with _server(model_root, DEFAULT_TEST_MODEL) as (_, url):
        yield url


@pytest.fixture(scope="module")
def browser():
    reason = _skip_reason()
    if reason:
        pytest.skip(f"web tests: {reason}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    given = os.environ.get("GANSERVE_WEB_SHOTS")
    path = Path(given) if given else tmp_path_factory.mktemp("web-shots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _open(browser, url: str, width: int = 1280, height: int = 900):
    """A fresh page on `url`, waited until the first grid is shown; JS exceptions are collected."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(TIMEOUT_MS)
    page.js_errors = []
    page.on("pageerror", lambda exc: page.js_errors.append(str(exc)))
    # what the Content-Security-Policy blocks is logged to the console: an error here too
    page.on(
        "console",
        lambda msg: "Content Security Policy" in msg.text and page.js_errors.append(msg.text),
    )
    page.goto(url + "/")
    return page


@pytest.fixture
def page(browser, base_url):
    page = _open(browser, base_url)
    page.wait_for_selector("body[data-ready='1']")
    yield page
    errors = page.js_errors
    page.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _wait(page, expression: str, arg=None, timeout_ms: float = TIMEOUT_MS):
    """Poll `expression` (a JS expression, or a function of `arg`) until it is truthy. Not
    Playwright's wait_for_function: its in-page poller uses eval, which the page's CSP forbids."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not page.evaluate(expression, arg):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_ms} ms for {expression}")
        time.sleep(0.05)


def _all_loaded(page, selector: str) -> list[int]:
    """naturalWidth of every image matching `selector`, once each has finished loading."""
    _wait(page, "sel => [...document.querySelectorAll(sel)].every(i => i.complete)", arg=selector)
    return page.eval_on_selector_all(selector, "els => els.map(e => e.naturalWidth)")


def _png(size: int, value: int = 200) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (size, size), value).save(buf, format="PNG")
    return buf.getvalue()


# --- no browser needed ------------------------------------------------------------------------


def test_page_and_static_files_are_served(base_url):
    r = httpx.get(base_url + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'src="static/app.js"' in r.text and "<title>" in r.text
    for name, ctype in (("app.js", "javascript"), ("app.css", "text/css")):
        r = httpx.get(f"{base_url}/static/{name}")
        assert r.status_code == 200 and ctype in r.headers["content-type"]
    # nothing outside the allow-list; nothing external is referenced
    assert httpx.get(base_url + "/static/index.html").status_code == 404
    assert httpx.get(base_url + "/static/..%2Fweb.py").status_code == 404
    page = httpx.get(base_url + "/").text + httpx.get(base_url + "/static/app.js").text
    assert "http://" not in page and "https://" not in page
    assert "/" not in httpx.get(base_url + "/openapi.json").json()["paths"]


def test_page_sends_security_headers_and_answers_head(base_url):
    """The page holds the API key: only its own scripts run, no site may frame it, no sniffing."""
    for path in ("/", "/static/app.js", "/static/app.css"):
        r = httpx.get(base_url + path)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        head = httpx.head(base_url + path)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == r.headers["content-length"]
    for path in ("/healthz", "/readyz", "/models", "/metrics", "/openapi.json"):
        r = httpx.head(base_url + path)
        assert r.status_code == 200 and r.content == b"", path


# --- in the browser ---------------------------------------------------------------------------


@needs_browser
def test_generate_grid_again_labels_and_keyboard(page, shots):
    assert page.locator("#st-model").inner_text().startswith(DEFAULT_TEST_MODEL)
    assert page.locator("#st-provider").inner_text() == "CPU"
    _wait(page, "document.querySelector('#st-batch').textContent.includes('avg')")
    assert "64 max" in page.locator("#st-batch").inner_text()
    assert page.locator("#st-ready").inner_text() == "yes"
    samples = page.locator("#grid .sample")
    assert samples.count() == 16
    assert all(w == 8 for w in _all_loaded(page, "#grid .sample img"))
    seed = int(page.locator("#seed").input_value())
    assert 0 <= seed < 2**53  # the page picks seeds JavaScript numbers hold exactly
    first = samples.first.get_attribute("title")
    assert first.startswith(f"seed {seed} · label ")  # mixed labels: each drawn from its seed
    page.screenshot(path=str(shots / "generate.png"), full_page=True)

    page.click("#again-btn")
    _wait(page, f"document.querySelector('#seed').value !== '{seed}'")
    _wait(page, f"!document.querySelector('#grid .sample').title.startsWith('seed {seed} ')")
    assert samples.count() == 16

    page.select_option("#label", "1")
    page.fill("#count", "5")
    page.fill("#seed", "42")
    page.click("#gen-btn")
    _wait(page, "document.querySelectorAll('#grid .sample').length === 5")
    titles = samples.evaluate_all("els => els.map(e => e.title)")
    assert titles == [f"seed {42 + i} · label 1" for i in range(5)]
    assert page.locator("#grid .caption").first.inner_text() == "seed 42 · label 1"
    assert "seeds 42–46" in page.locator("#gen-info").inner_text()

    # keyboard: Space and Enter select samples; the focused sample shows its caption
    samples.nth(0).focus()
    page.keyboard.press("Space")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    assert samples.nth(0).get_attribute("aria-pressed") == "true"
    assert samples.nth(1).get_attribute("aria-pressed") == "true"
    assert "2 selected: seeds 42, 43" in page.locator("#sel-count").inner_text()
    samples.nth(2).focus()
    _wait(page, "getComputedStyle(document.activeElement.querySelector('.caption')).opacity === '1'")


@needs_browser
def test_walk_strip_gif_and_label_morph(page, shots):
    samples = page.locator("#grid .sample")
    samples.nth(3).click()
    samples.nth(7).click()
    page.click("#walk-use")
    seeds = [int(samples.nth(i).get_attribute("data-seed")) for i in (3, 7)]
    assert int(page.locator("#walk-seed-a").input_value()) == seeds[0]
    assert int(page.locator("#walk-seed-b").input_value()) == seeds[1]
    # a label morph 0 -> 2 with lerp in 4 steps
    page.select_option("#walk-label-a", "0")
    page.select_option("#walk-label-b", "2")
    page.fill("#walk-steps", "4")
    page.check("input[name='method'][value='lerp']")
    page.click("#walk-btn")
    page.wait_for_selector("#walk-gif-fig:not([hidden])")
    assert _all_loaded(page, "#walk-strip img") == [8] * 5
    assert _all_loaded(page, "#walk-gif") == [8]
    caps = page.locator("#walk-strip figcaption").all_inner_texts()
    assert caps[0] == "t=0.00 · 0" and caps[-1] == "t=1.00 · 2"
    assert "lerp" in page.locator("#walk-gif").get_attribute("alt")
    page.locator("#walk").screenshot(path=str(shots / "walk.png"))


@needs_browser
def test_arithmetic_from_selected_groups(page, shots):
    samples = page.locator("#grid .sample")
    for target, picks in (("arith-a", (0, 1)), ("arith-b", (2,)), ("arith-c", (4, 5))):
        page.click("#sel-clear")
        for i in picks:
            samples.nth(i).click()
        page.click(f"button.add-sel[data-target='{target}']")
        want = ", ".join(samples.nth(i).get_attribute("data-seed") for i in picks)
        assert page.locator(f"#{target}").input_value() == want
    page.select_option("#arith-label", "1")
    page.fill("#arith-n", "5")
    page.click("#arith-btn")
    page.wait_for_selector("#arith-out .result img")
    assert _all_loaded(page, "#arith-out img") == [8] * 6
    assert page.locator("#arith-out .neighbours img").count() == 5
    assert "with label 1" in page.locator("#arith-out .expr").inner_text()
    assert "5 neighbours" in page.locator("#arith-out").inner_text()
    page.locator("#arith").screenshot(path=str(shots / "arithmetic.png"))


@needs_browser
def test_score_file_grid_and_errors(page, shots, tmp_path):
    right, big = tmp_path / "digit.png", tmp_path / "big.png"
    right.write_bytes(_png(8))
    big.write_bytes(_png(20))
    page.set_input_files("#score-file", str(right))
    page.wait_for_selector("#score-out .score-row")
    text = page.locator("#score-out").inner_text()
    assert "digit.png" in text
    realness = float(text.split("realness")[1].split()[0])
    assert 0.0 <= realness <= 1.0
    assert "%" in text.split("classifier")[1]  # "<label> (<confidence>%)"
    assert _all_loaded(page, "#score-out img") == [8]

    # a 20x20 image is resized in the page by default ...
    page.set_input_files("#score-file", str(big))
    _wait(page, "document.querySelector('#score-out').textContent.includes('big.png')")
    assert page.locator("#error").is_hidden()
    # ... and rejected by the service when sent as is: the server's message is shown
    page.uncheck("#score-resize")
    page.set_input_files("#score-file", str(big))
    page.wait_for_selector("#error:not([hidden])")
    msg = page.locator("#error-text").inner_text()
    assert msg.startswith("422 invalid_input") and "the model needs 8x8" in msg and "request " in msg
    page.click("#error-close")
    assert page.locator("#error").is_hidden()

    page.click("#score-grid")
    _wait(page, "document.querySelector('#score-out').textContent.includes('IS ')")
    out = page.locator("#score-out").inner_text()
    assert "16 images" in out and "FID" in out and "label accuracy" in out
    assert "real 0." in page.locator("#grid .sample").first.get_attribute("title")
    page.locator("#score").screenshot(path=str(shots / "score.png"))


@needs_browser
def test_api_errors_are_shown(page, shots):
    page.fill("#truncation", "0.01")
    page.click("#gen-btn")
    page.wait_for_selector("#error:not([hidden])")
    msg = page.locator("#error-text").inner_text()
    assert msg.startswith("422 invalid_input: truncation") and "0.05" in msg
    page.screenshot(path=str(shots / "error.png"))
    page.fill("#truncation", "0.5")
    page.click("#gen-btn")
    page.wait_for_selector("#error", state="hidden")
    # the banner hides when the request is sent; the caption changes when the reply is drawn
    _wait(page, "document.querySelector('#gen-info').textContent.includes('truncation 0.5')")
    page.fill("#seed", str(2**53 + 1))
    page.click("#gen-btn")
    assert "beyond what this page handles exactly" in page.locator("#error-text").inner_text()
    page.fill("#arith-a", "1, x")
    page.click("#arith-btn")
    assert '"x" is not a seed' in page.locator("#error-text").inner_text()


@needs_browser
def test_unconditional_model_hides_labels(page):
    page.select_option("#model", "tiny-gan")
    _wait(page, "document.querySelector('#st-model').textContent.startsWith('tiny-gan')")
    _wait(page, "document.querySelector('#grid .sample')?.title.match(/^seed \\d+$/)")
    assert page.locator("#label").is_disabled()
    assert page.locator("#walk-label-a").is_hidden()
    page.fill("#walk-seed-a", "5")
    page.fill("#walk-seed-b", "6")
    page.click("#walk-btn")
    page.wait_for_selector("#walk-gif-fig:not([hidden])")
    assert page.locator("#walk-strip figcaption").first.inner_text() == "t=0.00"


@needs_browser
def test_phone_width_360(browser, base_url, shots):
    page = _open(browser, base_url, width=360, height=780)
    page.wait_for_selector("body[data-ready='1']")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360  # no sideways scrolling
    box = page.locator("#grid .sample").first.bounding_box()
    assert box["width"] >= 44  # a comfortable touch target
    assert all(w > 0 for w in _all_loaded(page, "#grid .sample img"))
    page.screenshot(path=str(shots / "phone-360.png"), full_page=True)
    assert not page.js_errors
    page.close()


@needs_browser
def test_api_key_prompt(browser, model_root):
    with _server(model_root, DEFAULT_TEST_MODEL, api_keys="sekret") as (_, url):
        page = _open(browser, url)
        page.wait_for_selector("#error:not([hidden])")
        assert page.locator("#error-text").inner_text().startswith("401")
        assert page.locator("#key-box").get_attribute("open") is not None
        page.fill("#api-key", "sekret")
        page.locator("#api-key").press("Enter")
        page.locator("#api-key").blur()
        page.wait_for_selector("body[data-ready='1']")
        assert page.locator("#grid .sample").count() == 16
        assert not page.js_errors
        page.close()


# --- the README's screenshot ------------------------------------------------------------------


def readme_screenshot(out: Path = ROOT / "docs" / "screenshot.png") -> Path:
    """Screenshot of the page serving the real default models (models/mnist-cdcgan) for the README."""
    reason = _skip_reason()
    if reason:
        raise SystemExit(reason)
    if not (ROOT / "models" / "mnist-cdcgan" / "model.json").exists():
        raise SystemExit("models/mnist-cdcgan is absent")
    from playwright.sync_api import sync_playwright

    with _server(ROOT / "models", "mnist-cdcgan") as (_, url), sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = b.new_page(viewport={"width": 1100, "height": 900})
        page.set_default_timeout(30_000)
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready='1']")
        page.fill("#count", "24")
        page.fill("#seed", "2024")
        page.click("#gen-btn")
        _wait(page, "document.querySelector('#gen-info').textContent.includes('2024')")
        samples = page.locator("#grid .sample")
        for i in (1, 6):
            samples.nth(i).click()
        page.click("#walk-use")
        page.select_option("#walk-label-a", "3")
        page.select_option("#walk-label-b", "8")
        page.fill("#walk-steps", "9")
        page.click("#walk-btn")
        page.wait_for_selector("#walk-gif-fig:not([hidden])")
        page.click("#sel-clear")
        for target, picks in (("arith-a", (0, 2)), ("arith-b", (3,)), ("arith-c", (4,))):
            for i in picks:
                samples.nth(i).click()
            page.click(f"button.add-sel[data-target='{target}']")
            page.click("#sel-clear")
        page.select_option("#arith-label", "7")
        page.click("#arith-btn")
        page.wait_for_selector("#arith-out .result img")
        page.click("#score-grid")
        _wait(page, "document.querySelector('#score-out').textContent.includes('IS ')")
        samples.nth(1).click()
        samples.nth(6).click()
        samples.nth(9).hover()
        raw = page.screenshot(full_page=True)
        b.close()
    # a palette PNG keeps the README image small
    img = Image.open(io.BytesIO(raw)).convert("RGB")
    img = img.quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out, format="PNG", optimize=True)
    return out


if __name__ == "__main__":
    if "--readme-shot" in sys.argv:
        path = readme_screenshot()
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    else:
        print("usage: python tests/test_web.py --readme-shot  (tests: python -m pytest tests/test_web.py)")
