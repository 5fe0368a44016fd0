"""What a person sees: headless Debian Chromium (driven by selenium and chromedriver) against
`aggregator serve`: the index, a feed rendered by the shipped XSLT, an archive page and an
article page, with screenshots."""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

import pytest
from test_readers import expected_titles, serving

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="chromium and chromium-driver not installed (apt-get install them)"
)


@pytest.fixture
def browser(tmp_path: Path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--window-size=1200,1600",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


# Chromium shows application/atom+xml and application/rss+xml as plain text and applies an
# XSLT only to documents served with an XML type (application/xml, text/xml), so `aggregator
# serve` answers a browser's navigation (Accept lists text/html) with application/xml.
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def styled_by_browsers(url: str) -> bool:
    request = urllib.request.Request(url, headers={"Accept": BROWSER_ACCEPT})
    with urllib.request.urlopen(request, timeout=10) as r:
        return r.headers.get_content_type() in ("application/xml", "text/xml")


def screenshot(driver, path: Path) -> None:
    assert driver.save_screenshot(str(path))
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000, "a real, non-empty screenshot"


def test_index_feed_archive_and_article_pages(site: Path, browser, tmp_path: Path):
    from selenium.webdriver.common.by import By

    with serving(site, 'max_items = 4\nformats = ["atom", "rss", "json"]\nlanguage = "en"\n') as base:
        want = expected_titles(site / "config.toml")

        # The index: every category with its count, newest titles and subscribe links.
        browser.get(base + "index.html")
        assert browser.find_element(By.TAG_NAME, "h1").text == "Test"
        sections = {s.get_attribute("id"): s for s in browser.find_elements(By.CSS_SELECTOR, "section.feed")}
        assert set(sections) == set(want)
        notes = sections["zhengquan"]
        assert notes.find_element(By.TAG_NAME, "h2").text == "证券"
        assert notes.find_element(By.CSS_SELECTOR, ".count").text == "3 entries"
        shown = [a.text for a in notes.find_elements(By.CSS_SELECTOR, "ul.titles a")]
        assert shown == want["zhengquan"]
        subscribe = {a.text: a.get_attribute("href") for a in notes.find_elements(By.CSS_SELECTOR, ".subscribe a")}
        assert subscribe == {f"{label}": f"{base}zhengquan/{name}" for label, name in
                             (("Atom", "atom.xml"), ("RSS", "rss.xml"), ("JSON Feed", "feed.json"))}  # fmt: skip
        screenshot(browser, tmp_path / "index.png")

        # A feed opened in the browser is a readable page, not XML source.
        assert styled_by_browsers(base + "all/atom.xml")
        check_feed_views(browser, base, base, want, tmp_path)

        # An entry without an original URL links to its page on this site, readable as an article.
        browser.get(base + "index.html")
        link = browser.find_element(By.CSS_SELECTOR, "#keji ul.titles a")
        title = link.text
        assert link.get_attribute("href").startswith(base + "a/")
        link.click()
        assert browser.find_element(By.TAG_NAME, "h1").text == title
        body = browser.find_element(By.CSS_SELECTOR, "article .content").text
        assert "capital spending" in body
        assert "科技" in [a.text for a in browser.find_elements(By.CSS_SELECTOR, "p.chips a")]
        screenshot(browser, tmp_path / "article.png")


def check_feed_views(browser, at: str, base: str, want: dict[str, list[str]], tmp_path: Path) -> None:
    """The `all` feed in both formats, and its newest archive page, opened at `at`."""
    from selenium.webdriver.common.by import By

    for name in ("atom.xml", "rss.xml"):
        browser.get(at + "all/" + name)
        assert browser.find_element(By.TAG_NAME, "h1").text == "Test"
        titles = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "article.item h2 a")]
        assert titles == want["all"], name
        assert "copy its address into your feed reader" in browser.find_element(By.CSS_SELECTOR, ".note").text
        assert base + "all/" + name in browser.find_element(By.CSS_SELECTOR, ".feed-url").text
        screenshot(browser, tmp_path / f"feed-{name}.png")

    # Older entries are one click away, on an archive page that links back to the newest.
    older = browser.find_element(By.LINK_TEXT, "Older entries →").get_attribute("href")
    assert older.startswith(base + "all/archive/")
    browser.get(at + older.removeprefix(base))
    assert "archive page" in browser.find_element(By.CSS_SELECTOR, ".note").text
    assert browser.find_elements(By.CSS_SELECTOR, "article.item")
    assert browser.find_element(By.LINK_TEXT, "Newest entries").get_attribute("href") == base + "all/rss.xml"
