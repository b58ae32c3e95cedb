#!/usr/bin/env python3
"""Screenshot a neuroglancer URL with headless Chromium (software WebGL, no GPU needed).

    python3 tools/ngshot.py URL OUT.png [--timeout 60] [--size 1200x900] [--chromium PATH]

Launches Chromium headless on SwiftShader, drives it over the DevTools protocol
(`websocket-client` package), waits until `window.viewer.isReady()` (all visible chunks
loaded), waits one more second for the last frame, and writes a PNG. Exit status 0 when the
viewer became ready, 1 when it did not within the timeout (a screenshot is still written,
to see why), 2 when Chromium could not be driven. Used by `em view`'s browser test
(crates/em-cli/tests/view_browser.rs) and to regenerate docs/images/em-view.png.
"""

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket  # websocket-client


def find_chromium(explicit):
    """The Chromium binary: --chromium, $CHROMIUM, or the first of the usual names on PATH."""
    if explicit:
        return explicit
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("ngshot: no Chromium found (install chromium or pass --chromium PATH)")


def launch(chromium, profile, size):
    """Starts Chromium with remote debugging on a port it picks; returns (process, port)."""
    width, height = size
    flags = [
        "--headless=new",
        "--no-sandbox",  # needed as root; harmless otherwise
        "--use-angle=swiftshader",  # WebGL2 on the CPU
        "--enable-unsafe-swiftshader",
        "--remote-debugging-port=0",  # Chromium picks a free port, written to the profile
        "--remote-allow-origins=*",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "about:blank",
    ]
    proc = subprocess.Popen(
        [chromium, *flags],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    port_file = os.path.join(profile, "DevToolsActivePort")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Chromium exited with status {proc.returncode}")
        try:
            with open(port_file) as f:
                port = int(f.readline().strip())
            return proc, port
        except (OSError, ValueError):
            time.sleep(0.1)
    raise RuntimeError("Chromium did not open its DevTools port within 30 s")


class DevTools:
    """A DevTools-protocol session with one page."""

    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=60)
        self.next_id = 0
        self.errors = []

    def call(self, method, **params):
        """Sends a command and returns its result, keeping page errors seen meanwhile."""
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if msg.get("method") == "Runtime.exceptionThrown":
                details = msg["params"]["exceptionDetails"]
                text = details.get("exception", {}).get("description") or details.get("text")
                self.errors.append(str(text).splitlines()[0])

    def evaluate(self, expression):
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")


def page_websocket(port):
    """The DevTools websocket URL of the first page target."""
    deadline = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                targets = json.load(r)
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("Chromium shows no page target")
        time.sleep(0.2)


READY = "typeof window.viewer !== 'undefined' && window.viewer.isReady()"


def shoot(url, out, timeout, size, chromium):
    """Loads `url`, waits for the viewer, writes the screenshot; returns True if ready."""
    profile = tempfile.mkdtemp(prefix="ngshot-")
    proc = None
    try:
        proc, port = launch(chromium, profile, size)
        dt = DevTools(page_websocket(port))
        dt.call("Page.enable")
        dt.call("Runtime.enable")
        # The window size includes a window frame in some versions: fix the viewport itself.
        dt.call(
            "Emulation.setDeviceMetricsOverride",
            width=size[0],
            height=size[1],
            deviceScaleFactor=1,
            mobile=False,
        )
        start = time.monotonic()
        dt.call("Page.navigate", url=url)
        ready = False
        while time.monotonic() - start < timeout:
            if dt.evaluate(READY):
                ready = True
                break
            time.sleep(0.25)
        waited = time.monotonic() - start
        # isReady() turns true once the chunks are in; the frame drawing them comes after.
        time.sleep(1.0)
        shot = dt.call("Page.captureScreenshot", format="png")
        with open(out, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        state = "ready" if ready else f"NOT ready after {timeout} s"
        print(f"ngshot: viewer {state} ({waited:.1f} s); wrote {out}", file=sys.stderr)
        for e in dt.errors[:10]:
            print(f"ngshot: page error: {e}", file=sys.stderr)
        try:
            dt.call("Browser.close")
        except Exception:  # noqa: BLE001 - the browser may close the socket first
            pass
        return ready
    finally:
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("out")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the viewer")
    p.add_argument("--size", default="1200x900", help="window size WIDTHxHEIGHT")
    p.add_argument("--chromium", help="Chromium binary (default: $CHROMIUM or chromium on PATH)")
    args = p.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    try:
        ready = shoot(args.url, args.out, args.timeout, size, find_chromium(args.chromium))
    except Exception as e:  # noqa: BLE001 - report any driver failure as one line
        print(f"ngshot: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(0 if ready else 1)


if __name__ == "__main__":
    main()
