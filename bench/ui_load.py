"""Page-load time of the audit page (/ui, issue 16) with 500 documents and 1,000 versions, over loopback.

Builds the synthetic state (bench/ui_state.py: ~220,000 ledger rows, 500 jobs, 1,000 manifests) unless
--state already holds one, starts a real `seal serve` on it (tiny model config), then measures:
  routes   each JSON route the page reads, server round trip over loopback (p50 / p95 of --n calls), and
           the old full report (/v1/forgetting) for comparison
  browser  Debian's chromium (headless, selenium): navigation -> summary and the newest matrix window drawn,
           signed in (the key in sessionStorage), median of --n reloads; then each other tab's time to draw
Prints a table and writes OUT/ui-load.json.

    .venv/bin/python bench/ui_load.py --out results/ui/bench
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
KEY = "bench-ui-read-key"
ROUTES = [("whoami", "/v1/ui/whoami"), ("overview (polled)", "/v1/ui/overview"),
          ("matrix, newest window", "/v1/ui/matrix?view=promoted&limit=25&doc_limit=30&tail=true"),
          ("matrix, all versions", "/v1/ui/matrix?view=all&limit=25&doc_limit=30&tail=true"),
          ("curves", "/v1/ui/curves"), ("jobs page", "/v1/ui/jobs?limit=50&offset=0"),
          ("versions page", "/v1/ui/versions?limit=50&offset=0"), ("documents page", "/v1/ui/documents?limit=50"),
          ("one version", "/v1/ui/versions/500"), ("old: /v1/forgetting (full)", "/v1/forgetting")]
FIRST_VIEW = ("whoami", "overview (polled)", "matrix, newest window")  # what the page waits for before drawing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(state: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    seal = str(Path(sys.executable).parent / "seal")
    proc = subprocess.Popen([seal, "serve", "-c", str(ROOT / "configs/tiny.yaml"), "--port", str(port),
                             "--set", f"continual.state_dir={state}", "--set", "runtime.threads=1"],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "SEAL_API_KEYS": f"{KEY}:read"})
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 300
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"seal serve exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("seal serve did not start in 300 s")


def routes(url: str, n: int) -> list[dict]:
    out = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as c:
        for name, path in ROUTES:
            times, size = [], 0
            for _ in range(n):
                t = time.perf_counter()
                r = c.get(path)
                times.append(time.perf_counter() - t)
                r.raise_for_status()
                size = len(r.content)
            times.sort()
            out.append({"route": name, "path": path, "p50_ms": 1000 * statistics.median(times),
                        "p95_ms": 1000 * times[min(len(times) - 1, int(0.95 * len(times)))], "bytes": size})
    return out


def browser(url: str, n: int) -> dict | None:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.support.ui import WebDriverWait
    except ImportError:
        return None
    if not (chromium and driver):
        return None
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(driver), options=opts)
    js = d.execute_script
    wait = lambda cond: WebDriverWait(d, 60, poll_frequency=0.05).until(lambda _: cond())  # noqa: E731
    try:
        d.get(url + "/healthz")
        js("sessionStorage.setItem('seal-ui-key', arguments[0])", KEY)  # signed in, as after the first visit
        loads = []
        for _ in range(n + 1):  # the first load warms the browser's cache of the static files: not counted
            d.get(url + "/ui/")
            wait(lambda: js("return document.body.dataset.loaded") == "1")
            loads.append(js("return window.sealTimings.since_navigation_ms") / 1000)
        tabs = {}
        for tab in ("curves", "jobs", "versions", "documents", "matrix"):
            js("document.body.dataset.ready = ''")
            d.find_element("id", f"tab-{tab}").click()
            wait(lambda: js("return document.body.dataset.ready") == tab)
            tabs[tab] = js(f"return window.sealTimings['{tab}_ms']") / 1000
        nav = js("const e = performance.getEntriesByType('navigation')[0]; return {ttfb: e.responseStart, "
                 "dom: e.domContentLoadedEventEnd, load: e.loadEventEnd}")
        return {"chromium": d.capabilities.get("browserVersion"), "page_load_s": loads[1:],
                "median_s": statistics.median(loads[1:]), "cold_first_load_s": loads[0], "tabs_s": tabs,
                "last_navigation_ms": nav}
    finally:
        d.quit()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--state", type=Path, default=None, help="a state built by bench/ui_state.py (default: build "
                                                             "one in a temporary folder)")
    ap.add_argument("--docs", type=int, default=500)
    ap.add_argument("--versions", type=int, default=1000)
    ap.add_argument("--n", type=int, default=10, help="calls per route and page loads")
    ap.add_argument("--out", type=Path, default=ROOT / "results/ui/bench")
    a = ap.parse_args()
    from bench.ui_state import build

    tmp = None
    if a.state is None:
        tmp = tempfile.TemporaryDirectory(prefix="seal-ui-bench-")
        a.state = Path(tmp.name) / "state"
    built = None
    if not (a.state / "memory.sqlite").exists():
        print(f"building {a.docs} documents x {a.versions} versions in {a.state} ...", flush=True)
        built = build(a.state, a.docs, a.versions)
    a.out.mkdir(parents=True, exist_ok=True)
    log = Path(tempfile.gettempdir()) / "seal-ui-bench-serve.log"  # the server's log stays out of results/
    proc, url = _serve(a.state, log)
    try:
        r = routes(url, a.n)
        b = browser(url, a.n)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        if tmp is not None:
            tmp.cleanup()
    first_view_server = sum(x["p50_ms"] for x in r if x["route"] in FIRST_VIEW)
    result = {"documents": a.docs, "versions": a.versions, "state": built, "n": a.n, "routes": r,
              "first_view_server_ms": first_view_server, "browser": b, "budget_s": 2.0,
              "cpus": os.cpu_count(), "load_avg": os.getloadavg()}
    (a.out / "ui-load.json").write_text(json.dumps(result, indent=1))
    print(f"\n{'route':32s} {'p50 ms':>8s} {'p95 ms':>8s} {'bytes':>10s}")
    for x in r:
        print(f"{x['route']:32s} {x['p50_ms']:8.1f} {x['p95_ms']:8.1f} {x['bytes']:10d}")
    print(f"{'first view, server (sum of p50)':32s} {first_view_server:8.1f}")
    if b:
        print(f"\nbrowser (chromium {b['chromium']}): page load, navigation -> first view drawn: median "
              f"{b['median_s']:.3f} s over {len(b['page_load_s'])} loads (max {max(b['page_load_s']):.3f} s; "
              f"cold first load {b['cold_first_load_s']:.3f} s); budget 2 s")
        print("tabs: " + ", ".join(f"{k} {v:.3f} s" for k, v in b["tabs_s"].items()))
    else:
        print("\nbrowser: chromium/chromedriver/selenium not available, page load not measured in a browser")
    print(f"\nwrote {a.out / 'ui-load.json'}")


if __name__ == "__main__":
    main()
