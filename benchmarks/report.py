"""Report page: bytes per minute of audio, and the time to the first drawn view in headless Chromium.

    python benchmarks/report.py [--result OUT.h5 --audio MANIFEST.tsv --timings timings.json
                                 --metrics eval/metrics.json --screenshots docs/figures]

Size: synthetic 60 s utterances (40 tokens, the issue's case, and 150 tokens, a fast speaker's minute
of SentencePiece pieces) with audio, split into token maps, spectrogram and audio. First view: a
fresh navigation straight to the utterance, until its map is drawn (median of 3). With --result the
same is measured on a real run, and --screenshots writes the README's screenshots of it.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import browser  # noqa: E402
from common import print_table, write_results  # noqa: E402
from test_report import synthetic  # noqa: E402

from spes_jax.report import Utterance, load_result, utterances, write_report  # noqa: E402
from spes_jax.provenance import model_name  # noqa: E402


def parts(page: str) -> dict:
    """Bytes of the page taken by each kind of embedded array (base64 text)."""
    field = lambda name: sum(len(m) for m in re.findall(f'"{name}":"([^"]*)"', page))
    maps, feats, audio = field("maps"), field("features"), field("data")
    return {"maps MB": maps / 1e6, "spectrogram MB": feats / 1e6, "audio MB": audio / 1e6,
            "page MB": len(page.encode()) / 1e6}


def first_view(driver, path, uid: str, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        driver.get("about:blank")
        driver.get(path.as_uri() + "#u=" + uid)
        end = time.time() + 30
        while (ms := driver.execute_script("return window.spesReport.firstViewMs")) is None and time.time() < end:
            time.sleep(0.02)
        times.append(ms)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--result", help="explanation file or folder")
    ap.add_argument("--audio", help="WAV, folder or manifest (as spes-jax report --audio)")
    ap.add_argument("--timings")
    ap.add_argument("--metrics", help="metrics.json of spes-jax evaluate (per-utterance deletion AUC)")
    ap.add_argument("--screenshots", help="folder for PREFIX_index.png and PREFIX_view.png")
    ap.add_argument("--prefix", default="report", help="screenshot file name prefix (default: report)")
    ap.add_argument("--title", default="SPES: bundled samples", help="the page's title")
    ap.add_argument("--view", default="test00001", help="utterance of the view screenshot")
    ap.add_argument("--token", type=int, default=5, help="token shown in the view screenshot (0-based)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    driver = browser.start(os.path.join(tmp, "profile"))
    rows = []
    try:
        for K in (40, 150):
            exp, x = synthetic("utt", K=K, T=6000)
            path = Path(tmp, f"synthetic{K}.html")
            write_report(path, [Utterance(exp, x)])
            rows.append({"input": f"synthetic 60 s, {K} tokens", **parts(path.read_text()),
                         "first view ms": first_view(driver, path, "utt")})
        if args.result:
            exps, attrs = load_result(args.result)
            path = Path(tmp, "real.html")
            items = utterances(exps, args.audio, args.timings, args.metrics)
            write_report(path, items, task=attrs.get("task", "asr"), title=args.title, attrs=attrs,
                         source=f"{len(items)} utterances, {model_name(attrs.get('model_path'))}")
            seconds = sum(e.spectrogram_saliency.shape[1] for e in exps.values()) / 100
            row = {"input": f"{os.path.basename(args.result)}: {len(exps)} utt., {seconds:.1f} s", **parts(path.read_text())}
            row["MB per minute"] = row["page MB"] / seconds * 60
            row["first view ms"] = first_view(driver, path, args.view)
            rows.append(row)
            if args.screenshots:
                shoot(driver, path, args)
    finally:
        driver.quit()
    print_table(rows, ["input", "maps MB", "spectrogram MB", "audio MB", "page MB", "MB per minute", "first view ms"])
    meta = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus (shared)",
            "browser": "Debian chromium, headless"}
    print("wrote", write_results("report", rows, meta))


def shoot(driver, path, args):
    from selenium.webdriver.common.by import By

    driver.set_window_size(1360, 520)
    driver.get(path.as_uri())
    time.sleep(0.5)
    driver.save_screenshot(os.path.join(args.screenshots, f"{args.prefix}_index.png"))
    driver.set_window_size(1360, 1010)
    driver.get(path.as_uri() + "#u=" + args.view)
    time.sleep(0.5)
    driver.find_element(By.CSS_SELECTOR, f'.tok[data-pos="{args.token + 1}"]').click()
    driver.execute_script("document.activeElement.blur()")
    driver.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.3)
    driver.save_screenshot(os.path.join(args.screenshots, f"{args.prefix}_view.png"))


if __name__ == "__main__":
    main()
