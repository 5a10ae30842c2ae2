"""Open every page of the built book in headless Chromium and check what a reader would see.

Run with ``make browser`` (after ``make book``) or ``pytest tests/browser``; a plain ``pytest tests`` skips this
folder (see conftest.py). Settings, all optional:

* ``BOOK_HTML``: the built book (default ``_build/html``);
* ``BOOK_SCREENSHOTS``: where one PNG per page goes (default ``_build/screenshots``);
* ``CHROMIUM``: the browser executable (default: ``chromium`` or a relative of it on PATH).

For each page in ``_toc.yml``: the page loads over HTTP from a local server; every request it makes stays on
that server and succeeds; no JavaScript error is thrown; MathJax (served from the book itself) typesets every
formula, with no TeX error and no raw LaTeX left in the text; every image exists and decodes (naturalWidth > 0);
every internal link points to an existing file and, with a ``#fragment``, to an existing id; no output shows a
Python traceback.
"""

import base64
import functools
import html.parser
import http.server
import os
import pathlib
import re
import threading
import urllib.parse
import warnings

import pytest
import yaml

from .chromium_pipe import Browser, CDPError, find_chromium

ROOT = pathlib.Path(__file__).resolve().parents[2]
HTML = pathlib.Path(os.environ.get("BOOK_HTML", ROOT / "_build" / "html")).resolve()
SHOTS = pathlib.Path(os.environ.get("BOOK_SCREENSHOTS", ROOT / "_build" / "screenshots")).resolve()
MAX_SHOT_HEIGHT = 12000   # px; long chapters are cut there


def toc_pages(toc_file=ROOT / "_toc.yml"):
    """Docnames in _toc.yml, in reading order: the root, then every `file:` of parts, chapters and sections."""
    toc = yaml.safe_load(toc_file.read_text())
    pages = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                pages.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk({k: v for k, v in toc.items() if k != "root"})
    return [re.sub(r"\.(md|ipynb|rst)$", "", p) for p in pages]


PAGES = toc_pages()


# --- the local server -------------------------------------------------------------------------------------
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    if not (HTML / "index.html").is_file():
        pytest.fail(f"No built book at {HTML} (index.html missing): run `make book` first, or set BOOK_HTML.")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietHandler, directory=str(HTML)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    exe = find_chromium()
    if exe is None:
        pytest.fail("No Chromium found: install it (Debian: `apt-get install -y chromium`) or set CHROMIUM=/path.")
    with Browser(exe) as b:
        b.page = b.new_page()
        yield b


# --- what the page reports about itself -------------------------------------------------------------------
COLLECT_JS = r"""
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const within = (p, ms) => Promise.race([p, sleep(ms).then(() => 'timeout')]);
  const out = {};
  // MathJax: wait for the first typesetting pass.
  out.mathjax = window.MathJax && window.MathJax.startup
      ? {version: window.MathJax.version || null,
         status: window.MathJax.startup.promise
           ? await within(window.MathJax.startup.promise.then(() => 'ok', e => 'failed: ' + e), 30000)
           : 'no startup promise'}
      : null;
  out.mathjaxScripts = Array.from(document.scripts).map(s => s.src).filter(s => /mathjax/i.test(s));
  // Images: load lazy ones too, then wait for all of them.
  const imgs = Array.from(document.images);
  imgs.forEach(i => { i.loading = 'eager'; });
  await within(Promise.all(imgs.map(i => i.decode().catch(() => null))), 20000);
  out.images = imgs.map(i => ({src: i.getAttribute('src'), url: i.currentSrc || i.src, complete: i.complete,
                               naturalWidth: i.naturalWidth, alt: i.getAttribute('alt') || ''}));
  // Dropdowns (solutions, reproduction details, hidden code): each must open and show content.
  const dropdowns = Array.from(document.querySelectorAll('details'));
  out.dropdowns = dropdowns.map(d => {
    const was = d.open;
    d.open = true;
    const body = Array.from(d.children).filter(c => c.tagName !== 'SUMMARY');
    const shown = d.open && body.some(c => c.getBoundingClientRect().height > 0);
    d.open = was;
    return {summary: (d.querySelector('summary') || {}).textContent?.trim().slice(0, 80) || '', shown};
  });
  out.links = Array.from(document.querySelectorAll('a[href], link[href]'))
                   .map(a => ({href: a.getAttribute('href'), url: a.href}));
  out.ids = Array.from(document.querySelectorAll('[id], a[name]')).map(e => e.id || e.getAttribute('name'));
  // Math: every element Sphinx marked as math must hold a MathJax rendering, and no TeX error.
  const maths = Array.from(document.querySelectorAll('.math'));
  out.mathCount = maths.length;
  out.mjxCount = document.querySelectorAll('mjx-container').length;
  out.unrendered = maths.filter(m => !m.querySelector('mjx-container'))
                        .map(m => m.textContent.trim().slice(0, 120));
  out.texErrors = Array.from(document.querySelectorAll('mjx-merror, [data-mjx-error]'))
                       .map(e => (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 120));
  // Raw LaTeX in the text a reader sees, outside code and outside the math elements checked above.
  const skip = 'script, style, pre, code, textarea, noscript, template, kbd, samp, .highlight, mjx-container, .math';
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const raw = [];
  const pattern = /\$\$|\\\(|\\\)|\\\[|\\\]|\\begin\{|\$[^$\n]*\\[A-Za-z]+[^$\n]*\$/;
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const p = n.parentElement;
    if (!p || p.closest(skip)) continue;
    const m = n.textContent.match(pattern);
    if (m) raw.push(n.textContent.trim().slice(0, 160));
  }
  out.rawLatex = raw;
  // Tracebacks and error outputs.
  const text = document.body.innerText;
  out.tracebackText = text.includes('Traceback (most recent call last)');
  out.errorOutputs = Array.from(document.querySelectorAll('.output_error, .traceback, .output.error'))
                          .map(e => e.textContent.trim().slice(0, 300));
  out.stderrErrors = Array.from(document.querySelectorAll('.stderr, .output_stderr'))
                          .map(e => e.textContent.trim())
                          .filter(t => /Traceback|\b\w*(Error|Exception)\b:/.test(t))
                          .map(t => t.slice(0, 300));
  out.height = Math.ceil(Math.max(document.documentElement.scrollHeight, document.body.scrollHeight));
  out.title = document.title;
  return out;
})()
"""


# Known problems of upstream packages: reported as warnings, not failures. (regex on the problem, why accepted)
KNOWN_ISSUES = [
    (r"JavaScript exception: SyntaxError: Identifier 'THEBE_JS_URL' has already been declared",
     "sphinx-thebe 0.3.1 under Sphinx 7 adds its config <script> twice; harmless, the first one holds"),
]


def split_known(problems):
    """(real problems, {reason: [known problems]})."""
    real, known = [], {}
    for p in problems:
        why = next((why for rx, why in KNOWN_ISSUES if re.search(rx, p)), None)
        if why:
            known.setdefault(why, []).append(p)
        else:
            real.append(p)
    return real, known


class _Ids(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name == "id" or (tag == "a" and name == "name"):
                self.ids.add(value)


@functools.lru_cache(maxsize=None)
def ids_in(path):
    parser = _Ids()
    parser.feed(pathlib.Path(path).read_text(encoding="utf-8", errors="replace"))
    return frozenset(parser.ids)


def local_file(url, site):
    """The file under HTML that a same-site URL names (index.html for a folder), or None if the URL is external."""
    if not url.startswith(site + "/"):
        return None
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path).lstrip("/")
    target = (HTML / path).resolve()
    if path == "" or path.endswith("/"):
        target = target / "index.html"
    return target


def short(url, site):
    return url[len(site):] if url.startswith(site) else url


def check_page(doc, site, browser):
    """Open one page; return (list of problems, page report)."""
    page_file = HTML / f"{doc}.html"
    if not page_file.is_file():
        return [f"page not built: {page_file} is missing (it is in _toc.yml; run `make book`)"], {}
    url = f"{site}/{doc}.html"
    b, session = browser, browser.page
    start = len(b.events)
    nav = b.call("Page.navigate", {"url": url}, session=session)
    if nav.get("errorText"):
        return [f"navigation to {url} failed: {nav['errorText']}"], {}
    b.wait_event("Page.loadEventFired", session, start, timeout=60)
    report = b.evaluate(session, COLLECT_JS, timeout=90)
    b.drain(0.3)
    events = [e for e in b.events[start:] if e.get("sessionId") == session]
    problems = []

    # Network: every request goes to the local server and succeeds.
    requests = {}
    for ev in events:
        m, p = ev["method"], ev.get("params", {})
        if m == "Network.requestWillBeSent":
            requests[p["requestId"]] = req = p["request"]["url"]
            if req == f"{site}/favicon.ico":
                continue          # asked for by the browser itself; Sphinx has none unless html_favicon is set
            if not (req.startswith(site + "/") or req.startswith("data:") or req.startswith("blob:")):
                problems.append(f"request to the outside (the book must work offline): {req}")
        elif (m == "Network.responseReceived" and p["response"]["status"] >= 400
              and p["response"]["url"] != f"{site}/favicon.ico"):
            problems.append(f"HTTP {p['response']['status']} for {short(p['response']['url'], site)}")
        elif m == "Network.loadingFailed" and not p.get("canceled"):
            problems.append(f"failed to load {short(requests.get(p['requestId'], '?'), site)}: {p.get('errorText')}")
        elif m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            problems.append("JavaScript exception: "
                            + (d.get("exception", {}).get("description") or d.get("text", "")).split("\n")[0]
                            + f" ({short(d.get('url', ''), site)}:{d.get('lineNumber')})")

    # Math.
    mj = report["mathjax"]
    if report["mathCount"]:
        if mj is None:
            problems.append(f"MathJax did not load ({report['mathCount']} formulas; scripts: "
                            f"{report['mathjaxScripts'] or 'none'})")
        elif mj["status"] != "ok":
            problems.append(f"MathJax {mj['version']} did not finish typesetting: {mj['status']}")
        for s in report["mathjaxScripts"]:
            if not s.startswith(site + "/"):
                problems.append(f"MathJax is loaded from outside the book: {s}")
    if report["unrendered"]:
        problems.append(f"{len(report['unrendered'])} of {report['mathCount']} formulas not rendered by MathJax "
                        f"(no mjx-container), e.g. {report['unrendered'][:3]}")
    for err in report["texErrors"]:
        problems.append(f"TeX error in a formula: {err}")
    for raw in report["rawLatex"][:10]:
        problems.append(f"raw LaTeX in the text: {raw!r}")
    if len(report["rawLatex"]) > 10:
        problems.append(f"... and {len(report['rawLatex']) - 10} more pieces of raw LaTeX")

    # Images.
    for img in report["images"]:
        src, iurl = img["src"], img["url"]
        target = local_file(iurl, site)
        if iurl.startswith("data:"):
            pass
        elif target is None:
            problems.append(f"image from outside the book: {iurl}")
            continue
        elif not target.is_file():
            problems.append(f"image file missing: src={src!r} -> {target}")
            continue
        if not img["complete"] or img["naturalWidth"] == 0:
            problems.append(f"image does not display (naturalWidth 0): src={(src or '')[:100]!r}")
        alt = img["alt"].strip()
        if not alt or alt.endswith((".png", ".svg", ".jpg")) or alt == src:
            problems.append(f"image without alt text (a file name is not one): src={(src or '')[:100]!r}")

    # Dropdowns.
    for d in report["dropdowns"]:
        if not d["shown"]:
            problems.append(f"dropdown {d['summary']!r} does not show its content when opened")

    # Internal links.
    seen = set()
    for link in report["links"]:
        href, lurl = link["href"], link["url"]
        if lurl in seen or not lurl.startswith(("http://", "https://")):
            continue          # mailto:, javascript:, duplicates
        seen.add(lurl)
        target = local_file(lurl, site)
        if target is None:
            continue          # external links are not checked offline
        if not str(target).startswith(str(HTML)):
            problems.append(f"link leaves the book folder: href={href!r}")
            continue
        if not target.is_file():
            problems.append(f"broken link: href={href!r} -> {target.relative_to(HTML)} does not exist")
            continue
        fragment = urllib.parse.unquote(urllib.parse.urlsplit(lurl).fragment)
        if fragment and target.suffix == ".html":
            ids = set(report["ids"]) if target == page_file.resolve() else ids_in(str(target))
            if fragment not in ids:
                problems.append(f"broken anchor: href={href!r} -> no id {fragment!r} in {target.relative_to(HTML)}")

    # Tracebacks.
    if report["tracebackText"]:
        problems.append("the page shows a Python traceback ('Traceback (most recent call last)')")
    for e in report["errorOutputs"]:
        problems.append(f"error output cell: {e!r}")
    for e in report["stderrErrors"]:
        problems.append(f"stderr output with an error: {e!r}")
    return problems, report


def screenshot(doc, browser, height):
    """Two PNGs of the page, 1280 px wide: the first screen a reader sees (900 px tall, ``<page>.first.png``) and
    the whole page (at most MAX_SHOT_HEIGHT, ``<page>.png``); returns the latter's path."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    name = doc.replace("/", "__")
    # as a reader first sees it: at the top, the dropdowns the checks opened closed again
    browser.evaluate(browser.page, "document.querySelectorAll('details[open]').forEach(d => { d.open = false; });"
                                   " window.scrollTo(0, 0); new Promise(r => requestAnimationFrame(r))")
    first = browser.call("Page.captureScreenshot", {"format": "png"}, session=browser.page, timeout=60)
    (SHOTS / f"{name}.first.png").write_bytes(base64.b64decode(first["data"]))
    h = max(900, min(height or 900, MAX_SHOT_HEIGHT))
    metrics = {"width": 1280, "deviceScaleFactor": 1, "mobile": False}
    browser.call("Emulation.setDeviceMetricsOverride", {**metrics, "height": h}, session=browser.page)
    try:
        browser.evaluate(browser.page, "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        shot = browser.call("Page.captureScreenshot", {"format": "png"}, session=browser.page, timeout=60)
    finally:
        browser.call("Emulation.setDeviceMetricsOverride", {**metrics, "height": 900}, session=browser.page)
    out = SHOTS / f"{name}.png"
    out.write_bytes(base64.b64decode(shot["data"]))
    return out


@pytest.mark.parametrize("doc", PAGES)
def test_page(doc, site, browser):
    try:
        problems, report = check_page(doc, site, browser)
    except CDPError as e:
        pytest.fail(f"{doc}: could not drive Chromium: {e}\n{browser.log_tail()}")
    shot = None
    if report:
        try:
            shot = screenshot(doc, browser, report.get("height"))
        except CDPError as e:
            problems.append(f"screenshot failed: {e}")
    problems, known = split_known(problems)
    for why, seen in known.items():
        warnings.warn(f"{doc}.html: known issue, not a failure: {why}. Seen: " + "; ".join(seen), stacklevel=1)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        pytest.fail(f"{doc}.html: {len(problems)} problem(s)"
                    + (f" (screenshot: {shot})" if shot else "") + f":\n{lines}", pytrace=False)


def test_toc_lists_pages():
    assert len(PAGES) >= 2 and len(set(PAGES)) == len(PAGES), f"odd _toc.yml pages: {PAGES}"
