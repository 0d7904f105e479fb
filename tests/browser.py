"""Headless Debian Chromium driven by Selenium through Debian's chromedriver, for the report tests.

Selenium rather than Playwright: a small pure-Python wheel that talks WebDriver to the chromedriver
Debian builds from the same source as its chromium (versions always match), where Playwright ships
its own Node.js driver and is tested against its own browser builds.
"""

from __future__ import annotations

import json
import os
import shutil

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1360,1000",
         "--force-device-scale-factor=1", "--autoplay-policy=no-user-gesture-required")


def missing() -> str | None:
    """Why no browser test can run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install '.[test]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            return f"{path} not found (apt-get install chromium chromium-driver)"
    return None


def start(user_data_dir: str):
    """A fresh headless Chromium with browser-console and network logging."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never download anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + (f"--user-data-dir={user_data_dir}",):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def requested_urls(driver, document: str) -> list[str]:
    """Every URL that pages loaded from ``document`` (a URL without fragment) asked the network
    stack for since the last call (the browser's own pages are left out)."""
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            params = msg["params"]
            if params.get("documentURL", "").split("#")[0] == document:
                urls.append(params["request"]["url"])
    return urls
