"""End to end in a real browser (Debian's chromium driven by Playwright) on sd-tiny: one session walks
dataset -> caption edit -> training (loss curve, sample grid, stop, resume) -> compare -> generate ->
PNG parameters -> file info, with the escaping case and no request leaving the machine. It also
takes the screenshots in docs/images (scripts/ui_screenshots.py sets SDLORA_UI_SCREENSHOTS)."""
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from sdlora.tiny.demo_data import write_style_dataset

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EVIL = "<img src=x onerror=alert(1)>"
LONG = 240_000  # ms: model loads and training steps on a busy 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`sdlora ui` on a loopback port, started as a user would, with a workspace of its own."""
    root = tmp_path_factory.mktemp("ui")
    write_style_dataset(root / "data", 4)
    (root / "data" / "style-003.txt").write_text(EVIL)
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "sdlora", "ui", "--port", str(port), "--model", "tiny",
                             "--runs", str(root / "runs"), "--outputs", str(root / "outputs"),
                             "--examples", str(Path("examples").resolve())],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(1)
    assert proc.poll() is None, (root / "server.log").read_text()
    yield f"http://127.0.0.1:{port}/", root
    proc.terminate()
    proc.wait(30)


def _box(page, elem_id):
    return page.locator(f"#{elem_id}").locator("textarea, input").first


def _fill_setting(page, key, value):
    _box(page, "tr-" + key.replace(".", "-").replace("_", "-")).fill(str(value))


def _shot(page, name, folder):
    page.screenshot(path=str(Path(folder) / f"ui-{name}.png"), full_page=False)


def test_whole_walk_in_a_browser(server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    assert Path(CHROMIUM).is_file(), "install Debian's chromium (apt-get install chromium); see dev.sh"
    url, root = server
    shots = os.environ.get("SDLORA_UI_SCREENSHOTS") or str(tmp_path)
    outside, dialogs = [], []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("request", lambda r: urlparse(r.url).hostname not in ("127.0.0.1", "localhost", None)
                and not r.url.startswith(("data:", "blob:")) and outside.append(r.url))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.set_default_timeout(LONG)
        try:
            page.goto(url)
            walk(page, root, shots)
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            print("server log:\n", (root / "server.log").read_text()[-4000:])
            raise
        finally:
            browser.close()
    assert dialogs == [] and outside == []


def _stage(name, started=[]):
    started.append((name, time.time()))
    if len(started) > 1:
        print(f"stage {started[-2][0]}: {started[-1][1] - started[-2][1]:.1f} s")


def walk(page, root, shots):
    data, run = root / "data", root / "runs" / "r1"
    _stage("Dataset")
    # Dataset: inspect, escaped caption, edit one caption
    _box(page, "ds-folders").fill(str(data))
    page.click("#ds-inspect")
    page.locator("#ds-report").get_by_text("4 image files: 4 usable").wait_for()
    page.locator("#ds-gallery").get_by_text(EVIL).first.wait_for()  # shown as text ...
    assert page.locator("img[src='x']").count() == 0  # ... never as an element
    page.locator("#ds-gallery button img").first.click()
    caption = _box(page, "ds-caption")
    page.wait_for_function("e => e.value.length > 0", arg=caption.element_handle())
    caption.fill("a red circle, edited")
    page.click("#ds-save")
    page.locator("#ds-status").get_by_text("saved").wait_for()
    assert (data / "style-000.txt").read_text() == "a red circle, edited\n"
    _shot(page, "dataset", shots)
    _stage("Train")
    # Train: the form, live TOML and command, Start
    page.get_by_role("tab", name="Train").click()
    for key, value in (("model.name", "tiny"), ("save.output_dir", run), ("train.steps", 1000),
                       ("data.resolution", 64), ("validation.prompts", "a red circle"),
                       ("validation.every_n_steps", 0), ("save.every_n_steps", 0)):
        _fill_setting(page, key, value)
    page.get_by_role("button", name="All settings").click()
    for section, values in (("[data]", {"data.min_bucket_side": 64, "data.num_workers": 0}),
                            ("[validation]", {"validation.num_inference_steps": 2, "validation.guidance_scale": 2.0}),
                            ("[save]", {"save.every_n_epochs": 0}), ("[log]", {"log.every_n_steps": 1})):
        page.get_by_role("button", name=section).click()
        for key, value in values.items():
            _fill_setting(page, key, value)
    _fill_setting(page, "train.lr", "fast")
    page.locator("#tr-status").get_by_text("train.lr").wait_for()  # inline error naming the field
    _fill_setting(page, "train.lr", "1e-3")
    page.locator("#tr-command").get_by_text("log.every_n_steps=1").wait_for()
    page.click("#tr-start")
    page.locator("#tr-status").get_by_text("started training").wait_for()
    page.get_by_role("button", name="All settings").click()
    page.evaluate("window.scrollTo(0, 0)")
    _shot(page, "train", shots)
    _stage("Runs")
    # Runs: loss curve and the base model's sample grid while running; Stop; Resume; Stop again (a
    # 1000-step run, so no machine is fast enough to finish before the Stop lands)
    page.get_by_role("tab", name="Runs").click()
    page.locator("#rn-progress").get_by_text(re.compile(r"running: step [1-9]")).wait_for()
    page.locator("#rn-samples img").first.wait_for()
    page.locator("#rn-loss").get_by_text("smoothed").first.wait_for()  # the curve's legend: lines drawn
    page.click("#rn-stop")
    page.locator("#rn-progress").get_by_text("stopped").wait_for()
    page.locator("#rn-summary").get_by_text("Resume continues").wait_for()
    stopped = int(re.search(r"step (\d+)", page.locator("#rn-progress").inner_text())[1])
    assert (run / "checkpoints" / f"step-{stopped:06d}" / "state.pt").is_file()
    page.click("#rn-resume")
    page.wait_for_function("n => { const m = /running: step (\\d+)/.exec(document.querySelector('#rn-progress')"
                           ".innerText); return m && Number(m[1]) > n; }", arg=stopped + 3)
    page.click("#rn-stop")
    page.locator("#rn-progress").get_by_text("stopped").wait_for()
    assert (run / "train.log").read_text().count("interrupted at step") == 2
    _shot(page, "runs", shots)
    _stage("Compare")
    # Compare the run's LoRA files against the base model
    page.get_by_role("tab", name="Compare").click()
    _box(page, "cp-run").fill(str(run))
    page.click("#cp-add")
    page.locator("#cp-status").get_by_text("added").wait_for()
    for elem, value in (("cp-prompts", "a red circle"), ("cp-steps", 2), ("cp-cfg", 2), ("cp-width", 64),
                        ("cp-height", 64)):
        _box(page, elem).fill(str(value))
    page.click("#cp-go")
    page.locator("#cp-status").get_by_text("grid").wait_for()
    page.locator("#cp-grid img").wait_for()
    _shot(page, "compare", shots)
    _stage("Generate")
    # Generate one image, then read its parameters back from the PNG
    page.get_by_role("tab", name="Generate").click()
    for elem, value in (("gn-prompt", "a blue square"), ("gn-steps", 2), ("gn-cfg", 2), ("gn-width", 64),
                        ("gn-height", 64)):
        _box(page, elem).fill(str(value))
    page.click("#gn-go")
    page.locator("#gn-status").get_by_text("1 images").wait_for()
    png = next((root / "outputs" / "generate").glob("00000-*.png"))
    page.get_by_text("Read a PNG's parameters").click()
    page.locator("#gn-png input[type=file]").set_input_files(str(png))
    page.locator("#gn-png-params").get_by_text("Steps: 2").wait_for()
    _shot(page, "generate", shots)
    _stage("Files")
    # Files: info on the trained LoRA
    page.get_by_role("tab", name="Files").click()
    _box(page, "fl-info-file").fill(str(next((run / "checkpoints").glob("step-*/*.safetensors"))))
    page.click("#fl-info")
    page.locator("#fl-info-out").get_by_text("kohya").first.wait_for()
    _shot(page, "files", shots)
    _stage("end")


def test_serves_no_file_outside_its_own(server):
    """gradio's file route refuses the dataset's own files, the repository and the system (allowed_paths
    is empty: what the page shows is copied to gradio's cache first)."""
    import httpx

    url, root = server
    for path in (root / "data" / "style-001.png", Path("pyproject.toml").resolve(), Path("/etc/passwd")):
        assert httpx.get(f"{url}gradio_api/file={path}").status_code == 403, path
