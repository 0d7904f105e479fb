"""The report page in a real headless Chromium: no console errors, no network requests, tokens,
arrow keys, map modes and audio change what is drawn, and a 1,000-utterance index stays light.

In CI (CI=true) a missing browser fails these tests; elsewhere they skip with the reason.
Screenshots go to $SPES_REPORT_SCREENSHOTS when set (docs/figures/ holds the README's).
"""

import dataclasses
import os
import time

import numpy as np
import pytest

import browser
from spes_jax.analysis.plausibility import token_words
from spes_jax import report
from spes_jax.report import Utterance, write_report
from test_report import synthetic


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    why = browser.missing()
    if why:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"the browser tests must run in CI: {why}")
        pytest.skip(why)
    d = browser.start(str(tmp_path_factory.mktemp("chromium-profile")))
    yield d
    d.quit()


def open_page(driver, path, fragment=""):
    url = path.as_uri()
    driver.get(url + fragment)
    return url


def wait_for(driver, script, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {script}")


# Fraction of pixels of the main canvas that changed since the previous call.
CHANGED = """
const c = document.getElementById('main'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
const p = window.__prev; window.__prev = d;
if (!p || p.length !== d.length) return 1;
let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] !== p[i] || d[i + 1] !== p[i + 1] || d[i + 2] !== p[i + 2]) n++;
return n / (d.length / 4);
"""


def assert_clean(driver, url):
    assert browser.console_errors(driver) == []
    requests = browser.requested_urls(driver, url)
    assert url in [u.split("#")[0] for u in requests], "the page load itself must be seen"
    foreign = [u for u in requests if u.split("#")[0] != url and not u.startswith(("data:", "blob:"))]
    assert foreign == [], "the page made network requests"


def screenshot(driver, tmp_path, name):
    folder = os.environ.get("SPES_REPORT_SCREENSHOTS") or str(tmp_path)
    driver.save_screenshot(os.path.join(folder, name))


@pytest.mark.parametrize("seconds, K", [(6, 12), pytest.param(60, 40, marks=pytest.mark.slow)])
def test_utterance_view(driver, tmp_path, seconds, K):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    exp, x = synthetic("utt", K=K, T=seconds * 100)
    n_words = max(token_words(exp.tokens)) + 1
    edges = np.linspace(0.2, seconds - 0.5, n_words + 1)
    timings = [(f"w{i}", float(edges[i]), float(edges[i + 1]) - 0.05) for i in range(n_words)]
    path = tmp_path / "utt.html"
    write_report(path, [Utterance(exp, x, timings)])
    url = open_page(driver, path, "#u=utt")
    first = wait_for(driver, "return window.spesReport.firstViewMs")
    print(f"\n{seconds} s / {K} tokens: report {path.stat().st_size / 1e6:.2f} MB, "
          f"first view drawn {first:.0f} ms after navigation started (not asserted)")
    assert driver.find_element(By.ID, "uid").text == "utt"
    driver.execute_script(CHANGED)

    act = ActionChains(driver)
    for k in (2, K // 2, K - 4):  # click three tokens: the drawn map changes each time
        act.move_to_element(driver.find_element(By.CSS_SELECTOR, f'.tok[data-pos="{k + 1}"]')).click().perform()
        assert driver.execute_script("return window.spesReport.state.k") == k
        assert driver.execute_script(CHANGED) > 0.01
    screenshot(driver, tmp_path, f"report_synthetic_{seconds}s.png")
    for key, k in ((Keys.ARROW_RIGHT, K - 3), (Keys.ARROW_RIGHT, K - 2), (Keys.ARROW_LEFT, K - 3)):
        act.send_keys(key).perform()
        assert driver.execute_script("return window.spesReport.state.k") == k
        assert driver.execute_script(CHANGED) > 0.01
    limits = driver.execute_script("return JSON.parse(document.getElementById('spes-u0').textContent).limits")
    for mode in ("raw", "word", "sentence", "norm"):
        driver.find_element(By.CSS_SELECTOR, f'#modes button[data-mode="{mode}"]').click()
        assert driver.execute_script(CHANGED) > 0.001, mode
        # colours span the range the builder computed (plotting.color_limits), and the caption says so
        expected = limits[mode][K - 3] if mode in ("norm", "word") else limits[mode]
        assert driver.execute_script("return window.spesReport.state.cur.lim") == expected, mode
        assert "median to the 99.5th percentile" in driver.find_element(By.ID, "caption").text

    driver.find_element(By.ID, "play").click()
    assert wait_for(driver, "return window.spesReport.state.playing")
    over = driver.find_element(By.ID, "over")
    act.move_to_element_with_offset(over, -200, 0).click_and_hold().move_by_offset(150, 0).release().perform()
    selection = driver.execute_script("return window.spesReport.state.sel")
    assert selection and 0.05 * seconds < selection[1] - selection[0] < 0.25 * seconds
    driver.find_element(By.ID, "play-sel").click()
    assert wait_for(driver, "return window.spesReport.state.playing")
    driver.find_element(By.ID, "play-top").click()
    assert wait_for(driver, "return window.spesReport.state.playing")
    driver.find_element(By.ID, "play").click()  # stops
    assert not driver.execute_script("return window.spesReport.state.playing")
    assert_clean(driver, url)


def test_index_of_1000_utterances(driver, tmp_path):
    from selenium.webdriver.common.by import By

    bases = [synthetic("base", K=3, T=40, seed=i)[0] for i in range(10)]
    # Every other one explains a given target (explain --targets), not the model's hypothesis.
    items = [Utterance(dataclasses.replace(bases[i % 10], id=f"utt{i:04d}", meta={"targets": "given"} if i % 2 else {}))
             for i in range(1000)]
    path = tmp_path / "corpus.html"
    write_report(path, items, title="1,000 utterances")
    url = open_page(driver, path)
    wait_for(driver, "return document.querySelectorAll('#tbody tr').length > 0")
    loaded = driver.execute_script("return performance.getEntriesByType('navigation')[0].loadEventEnd")
    print(f"\n1,000-utterance index ({path.stat().st_size / 1e6:.1f} MB) loaded in {loaded:.0f} ms (not asserted)")
    rendered = driver.execute_script("return document.querySelectorAll('#tbody tr:not(.pad)').length")
    assert 0 < rendered < 100, "rows outside the view must not be rendered"
    driver.execute_script("const w = document.getElementById('table-wrap'); w.scrollTop = w.scrollHeight;")
    wait_for(driver, "return document.querySelector('#tbody').textContent.includes('utt0999')")
    driver.find_element(By.XPATH, "//th[text()='size AUC']").click()
    driver.find_element(By.XPATH, "//th[text()='size AUC']").click()  # descending
    driver.execute_script("document.getElementById('table-wrap').scrollTop = 0")
    largest = driver.execute_script(
        "return Math.max(...JSON.parse(document.getElementById('spes-meta').textContent).rows.map(r => r['size AUC']))")
    wait_for(driver, f"return Number(document.querySelector('#tbody tr:not(.pad) td:last-child').textContent) === {largest}")
    driver.find_element(By.ID, "filter").send_keys("utt0500")
    wait_for(driver, "return document.getElementById('count').textContent.startsWith('1 of 1000')")
    driver.find_element(By.LINK_TEXT, "utt0500").click()
    wait_for(driver, "return window.spesReport.state.d && window.spesReport.state.d.id === 'utt0500'")
    assert driver.find_element(By.ID, "caption").text.startswith("Token 1 of 3")
    assert driver.find_element(By.ID, "utext").text.startswith("hypothesis")
    assert driver.find_elements(By.XPATH, "//th[text()='hypothesis / given target']")
    driver.get(url.split("#")[0] + "#u=utt0501")
    wait_for(driver, "return window.spesReport.state.d && window.spesReport.state.d.id === 'utt0501'")
    assert driver.find_element(By.ID, "utext").text.startswith("given target")
    assert_clean(driver, url)


def test_notebook_display(driver, tmp_path):
    """``report.page(exp)._repr_html_`` (an iframe, as a notebook shows it) draws the explanation."""
    exp, _ = synthetic("nb", K=5, T=200)
    page = tmp_path / "notebook.html"
    page.write_text(f"<!DOCTYPE html><html><body>{report.page(exp)._repr_html_()}</body></html>", encoding="utf-8")
    open_page(driver, page)
    driver.switch_to.frame(driver.find_element("tag name", "iframe"))
    try:
        assert wait_for(driver, "return window.spesReport.firstViewMs")
        assert driver.execute_script("return window.spesReport.state.d.K") == 5
    finally:
        driver.switch_to.default_content()
    assert browser.console_errors(driver) == []
