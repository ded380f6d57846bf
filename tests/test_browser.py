"""Widgets in a real browser: JupyterLab on 127.0.0.1, headless Chromium driven by Playwright.

A small widget notebook (the tutorial's decoding widget, on the embedded base model) is opened in JupyterLab, its
cells are run, the `max tokens` slider is moved, and the answer the widget shows must change. A screenshot goes to
`_html/browser_test.png`. Needs Debian's `chromium` (`apt-get install -y chromium`) and `pip install playwright`
(no browser download: Debian's binary is used); skipped with the reason when either is missing.
"""
import json, os, secrets, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.slow

CELLS = [
    "import ipywidgets as widgets\nfrom llmnb.api import LLM",
    "llm = LLM(dict(base_model='smollm2-135m-instruct', input_features=[dict(name='date', type='text')],\n"
    "               output_features=[dict(name='iso', type='text')], trainer=dict(type='none'),\n"
    "               prompt=dict(template='Write this date in ISO format (YYYY-MM-DD): {date}', chat_template=True)))\n"
    "llm.load_base();",
    "settings = {'greedy': {}, 'beam search (2)': dict(num_beams=2)}\n"
    "strategy = widgets.Dropdown(options=list(settings), description='decoding')\n"
    "max_new = widgets.IntSlider(value=2, min=1, max=16, description='max tokens')\n"
    "def answer(strategy, max_new_tokens):\n"
    "    gc = settings[strategy] | dict(max_new_tokens=max_new_tokens)\n"
    "    text = llm.generate('Write this date in ISO format (YYYY-MM-DD): the 3rd of July, 1999', generation_config=gc)\n"
    "    print(f'ANSWER[{text}]')\n"
    "widgets.interact(answer, strategy=strategy, max_new_tokens=max_new);",
]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    "JupyterLab serving `tmp_path` on a free loopback port with a random token; yields (url, token, folder)."
    if CHROMIUM is None: pytest.skip("chromium is not installed (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    pytest.importorskip("jupyterlab", reason="jupyterlab is not installed")
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata.kernelspec = dict(name="python3", display_name="Python 3", language="python")
    nbformat.write(nb, tmp_path / "widgets.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "JUPYTER_CONFIG_DIR": str(tmp_path / ".jupyter"), "JUPYTER_RUNTIME_DIR": str(tmp_path / ".runtime")}
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
                             "--ServerApp.open_browser=False", "--allow-root", "--LabApp.news_url=", "--LabApp.expose_app_in_browser=True", "--LabApp.check_for_updates_class="
                             "jupyterlab.NeverCheckForUpdate"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2); break
            except Exception:
                if proc.poll() is not None: pytest.fail(f"JupyterLab exited: {(tmp_path / 'lab.log').read_text()[-2000:]}")
                time.sleep(1)
        else: pytest.fail("JupyterLab did not answer within 120 s")
        yield url, token, tmp_path
    finally:
        proc.terminate()
        try: proc.wait(30)
        except subprocess.TimeoutExpired: proc.kill()
        log.close()


def _answer(page) -> str:
    "The text the widget's output area shows (the last `ANSWER[...]` line)."
    texts = page.locator(".jp-OutputArea-output pre").all_inner_texts()
    found = [t for t in texts if "ANSWER[" in t]
    return found[-1].strip() if found else ""


KERNEL_STATUS = "() => window.jupyterapp?.shell?.currentWidget?.sessionContext?.session?.kernel?.status ?? null"


def _wait_kernel_idle(page, timeout=180):
    "Wait until the open notebook's kernel reports `idle`; fail with the status seen last."
    deadline, status = time.time() + timeout, None
    while time.time() < deadline:
        status = page.evaluate(KERNEL_STATUS)
        if status == "idle": return
        time.sleep(1)
    raise AssertionError(f"the notebook's kernel did not become idle within {timeout} s (last status: {status!r})")


def _diagnose(page, folder, events) -> str:
    "What a failed run left behind: browser events, the notebook's outputs, the kernel status, JupyterLab's log."
    try: outputs = "\n".join(page.locator(".jp-OutputArea-output").all_inner_texts())[-3000:]
    except Exception as e: outputs = f"(could not read outputs: {e})"
    try: status = page.evaluate(KERNEL_STATUS)
    except Exception as e: status = f"(unknown: {e})"
    log = (folder / "lab.log").read_text(errors="replace")[-3000:]
    seen = "\n".join(events[-30:])
    return f"kernel status: {status}\n--- browser events ---\n{seen}\n--- notebook outputs ---\n{outputs}\n--- JupyterLab log ---\n{log}"


def test_decoding_widget_reacts_in_the_browser(lab):
    from playwright.sync_api import sync_playwright, expect
    url, token, folder = lab
    shot = ROOT / "_html" / "browser_test.png"
    shot.parent.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            events = []  # page crashes and console errors, reported if the test fails
            page.on("crash", lambda _: events.append("the page crashed"))
            page.on("pageerror", lambda e: events.append(f"page error: {e}"))
            page.on("console", lambda m: m.type == "error" and events.append(f"console: {m.text[:300]}"))
            try:
                page.goto(f"{url}/lab/tree/widgets.ipynb?token={token}", timeout=120_000)
                page.wait_for_selector(".jp-Notebook", timeout=120_000)
                page.wait_for_function("() => window.jupyterapp?.shell?.currentWidget?.sessionContext !== undefined", timeout=120_000)
                _wait_kernel_idle(page)
                # run every cell through JupyterLab's own command (no menu clicks that a toast or dialog could intercept)
                page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
                slider = page.locator(".widget-slider .ui-slider, .widget-slider .noUi-target").first
                slider.wait_for(timeout=300_000)
                expect(page.locator(".jp-OutputArea-output pre", has_text="ANSWER[")).to_have_count(1, timeout=300_000)
                before = _answer(page)
                # move the slider: focus its handle and press End (the maximum, 16 tokens)
                handle = page.locator(".widget-slider .noUi-handle, .widget-slider .ui-slider-handle").first
                handle.click()
                handle.press("End")
                readout = page.locator(".widget-slider .widget-readout").first
                expect(readout).to_have_text("16", timeout=30_000)
                deadline = time.time() + 300
                while _answer(page) in ("", before) and time.time() < deadline: time.sleep(1)
                after = _answer(page)
                page.screenshot(path=str(shot), full_page=True)
            except Exception as e:
                page.screenshot(path=str(shot.with_name("browser_test_failure.png")), full_page=True)
                raise AssertionError(f"{type(e).__name__}: {e}\n{_diagnose(page, folder, events)}") from e
        finally:
            browser.close()
    assert before.startswith("ANSWER[") and after.startswith("ANSWER["), (before, after)
    assert after != before, f"moving the slider did not change the widget's output: {before!r}"
    assert len(after) > len(before), (before, after)  # 16 tokens say more than 2
    assert shot.stat().st_size > 10_000
