"""Compare, Generate and Files tabs: forms over sdlora.ui.jobs (the CLI's jobs), results escaped."""
from __future__ import annotations

from pathlib import Path

from sdlora.formats.io import FORMATS
from sdlora.generate.schedulers import DEFAULT_SCHEDULER, SCHEDULERS
from sdlora.ui import html, jobs, require_gradio, runstate
from sdlora.ui.shared import Settings, guarded, output_dir


def _sampling(gr, prefix: str):
    """The shared sampling fields, in jobs.Sampling's order (after model and prompts)."""
    with gr.Row():
        negative = gr.Textbox(label="Negative prompt", scale=3, elem_id=f"{prefix}-negative")
        scheduler = gr.Dropdown(list(SCHEDULERS), value=DEFAULT_SCHEDULER, label="Sampler", scale=1)
    with gr.Row():
        seed = gr.Number(42, label="Seed", precision=0, elem_id=f"{prefix}-seed")
        steps = gr.Number(30, label="Steps", precision=0, elem_id=f"{prefix}-steps")
        cfg = gr.Number(7.5, label="CFG scale", elem_id=f"{prefix}-cfg")
        width = gr.Number(512, label="Width", precision=0, elem_id=f"{prefix}-width")
        height = gr.Number(512, label="Height", precision=0, elem_id=f"{prefix}-height")
        num = gr.Number(1, label="Images per prompt", precision=0, elem_id=f"{prefix}-num")
    return negative, seed, steps, cfg, width, height, scheduler, num


def _form(model, prompts, prompt_file, negative, seed, steps, cfg, width, height, scheduler, num, loras, out):
    return jobs.Sampling(model, prompts or "", prompt_file or "", negative or "", seed, steps, cfg, width, height,
                         scheduler, num, loras or "", out)


def prompt_files(settings: Settings) -> list[str]:
    return [""] + [str(p) for p in sorted(Path(settings.examples).glob("*/prompts.txt"))]


def metrics_html(result: jobs.Compared) -> str:
    parts = [html.message(note, "warn") for note in result.notes]
    if result.metrics:
        names = list(dict.fromkeys(k for values in result.metrics.values() for k in values))
        rows = [[col] + [f"{values[n]:.4f}" if n in values else "" for n in names]
                for col, values in result.metrics.items()]
        parts.append(html.table(["column"] + names, rows))
    return "".join(parts)


def report_frame(path: Path) -> str:
    """The self-contained HTML report in a sandboxed frame (no scripts run in it)."""
    text = Path(path).read_text(encoding="utf-8")
    return f"<iframe sandbox srcdoc=\"{html.esc(text)}\" style='width:100%;height:640px;border:1px solid #ddd'></iframe>"


def build_compare(settings: Settings):
    gr = require_gradio()
    model = gr.Textbox(settings.model, label="Base model", info="hub id, diffusers folder, .safetensors/.ckpt or tiny",
                       elem_id="cp-model")
    with gr.Row():
        loras = gr.Textbox(label="LoRA files", lines=3, scale=3, elem_id="cp-loras",
                           info="one per line: FILE or FILE:WEIGHT")
        with gr.Column(scale=2):
            run = gr.Textbox(label="Run folder", elem_id="cp-run", info="add its final LoRA and checkpoints")
            add_btn = gr.Button("Add the run's LoRA files", elem_id="cp-add")
    weights = gr.Textbox("0, 1", label="Weights", info="one column per LoRA and weight; 0 is the base model",
                         elem_id="cp-weights")
    with gr.Row():
        prompts = gr.Textbox(label="Prompts", lines=3, scale=3, elem_id="cp-prompts",
                             info="one per line; kohya options allowed (--n, --d, --s, --l, --w, --h)")
        prompt_file = gr.Dropdown(prompt_files(settings), value="", label="or a prompts file", scale=2,
                                  allow_custom_value=True)
    negative, seed, steps, cfg, width, height, scheduler, num = _sampling(gr, "cp")
    with gr.Row():
        evaluate = gr.Checkbox(False, label="Evaluate: CLIP/DINO metrics (needs their weights)")
        train_images = gr.Textbox(label="Training images (for CLIP-I, DINO)")
        out = gr.Textbox(output_dir(settings.outputs, "compare"), label="Output folder")
    go = gr.Button("Compare", variant="primary", elem_id="cp-go")
    status = gr.HTML(elem_id="cp-status")
    grid = gr.Image(label="Grid", type="filepath", interactive=False, elem_id="cp-grid")
    metrics = gr.HTML(elem_id="cp-metrics")
    report = gr.HTML(elem_id="cp-report")

    def on_add(folder, text):
        found = runstate.checkpoint_loras(folder)
        if not found:
            raise jobs.SdloraError(f"{folder}: no LoRA files yet")
        lines = [line for line in (text or "").splitlines() if line.strip()] + [str(p) for p in found]
        return "\n".join(dict.fromkeys(lines)), html.message(f"added {len(found)} LoRA files")

    def on_compare(*values):
        *sampling, weight_text, do_eval, train = values
        result = jobs.compare(_form(*sampling), weight_text or "", do_eval, train or "")
        return (str(result.grid), metrics_html(result), report_frame(result.report),
                html.message(f"grid {result.grid}, report {result.report}"))

    add_btn.click(guarded(on_add, 2), [run, loras], [loras, status])
    inputs = [model, prompts, prompt_file, negative, seed, steps, cfg, width, height, scheduler, num, loras, out,
              weights, evaluate, train_images]
    go.click(guarded(on_compare, 4), inputs, [grid, metrics, report, status])


def build_generate(settings: Settings):
    gr = require_gradio()
    model = gr.Textbox(settings.model, label="Base model", elem_id="gn-model")
    prompts = gr.Textbox(label="Prompt", lines=2, elem_id="gn-prompt", info="one prompt per line")
    negative, seed, steps, cfg, width, height, scheduler, num = _sampling(gr, "gn")
    with gr.Row():
        loras = gr.Textbox(label="LoRA files", lines=2, scale=3, info="one per line: FILE or FILE:WEIGHT",
                           elem_id="gn-loras")
        out = gr.Textbox(output_dir(settings.outputs, "generate"), label="Output folder", scale=2)
    go = gr.Button("Generate", variant="primary", elem_id="gn-go")
    status = gr.HTML(elem_id="gn-status")
    gallery = gr.Gallery(label="Images", columns=4, height=300, object_fit="contain", elem_id="gn-gallery")
    params = gr.HTML(elem_id="gn-params")
    with gr.Accordion("Read a PNG's parameters", open=False):
        png = gr.File(label="Drop a generated PNG", file_types=[".png"], elem_id="gn-png")
        png_params = gr.HTML(elem_id="gn-png-params")

    def on_generate(*values):
        result = jobs.generate(_form(*values))
        return ([str(p) for p in result.images], "".join(html.pre(t) for t in result.parameters),
                html.message(f"{len(result.images)} images in {values[-1]}"))

    def on_png(path):
        return html.pre(jobs.read_png(path)) if path else ""

    inputs = [model, prompts, gr.State(""), negative, seed, steps, cfg, width, height, scheduler, num, loras, out]
    go.click(guarded(on_generate, 3), inputs, [gallery, params, status])
    png.upload(guarded(on_png, 1), [png], [png_params])


def info_html(info: dict) -> str:
    head = {k: info[k] for k in ("file", "format", "base", "modules", "parameters", "size_bytes")}
    rows = [[name, c["modules"], c["ranks"], c["alphas"], c["kinds"], c["dora"], c["parameters"]]
            for name, c in info["components"].items()]
    return (html.pairs(head) + html.table(["component", "modules", "ranks", "alphas", "kinds", "DoRA", "parameters"], rows)
            + html.section("Metadata", html.table(["key", "value"], info["metadata"].items())))


def build_files(settings: Settings):
    gr = require_gradio()
    status = gr.HTML(elem_id="fl-status")
    with gr.Accordion("Info", open=True):
        with gr.Row():
            info_file = gr.Textbox(label="LoRA file", scale=4, elem_id="fl-info-file")
            info_btn = gr.Button("Show", scale=1, elem_id="fl-info")
        info_out = gr.HTML(elem_id="fl-info-out")
    with gr.Accordion("Convert", open=False):
        with gr.Row():
            c_src, c_dst = gr.Textbox(label="LoRA file"), gr.Textbox(label="Output .safetensors")
            c_fmt = gr.Dropdown(list(FORMATS), value="kohya", label="to")
            c_dtype = gr.Dropdown(["", *jobs.DTYPES], value="", label="dtype (empty: as the input)")
        c_btn = gr.Button("Convert")
    with gr.Accordion("Resize (SVD)", open=False):
        with gr.Row():
            r_src, r_dst = gr.Textbox(label="LoRA file"), gr.Textbox(label="Output .safetensors")
            r_rank = gr.Number(8, label="new rank", precision=0)
        r_btn = gr.Button("Resize")
        r_out = gr.HTML()
    with gr.Accordion("Merge into a model", open=False):
        with gr.Row():
            m_base = gr.Textbox(settings.model, label="Base model")
            m_loras = gr.Textbox(label="LoRA files", lines=2, info="one per line: FILE or FILE:WEIGHT")
            m_out = gr.Textbox(label="Output: FILE.safetensors or a folder")
        with gr.Row():
            m_dtype = gr.Dropdown(["", *jobs.DTYPES], value="", label="dtype (empty: fp32)")
            m_over = gr.Checkbox(False, label="overwrite")
        m_btn = gr.Button("Merge")

    def on_resize(src, dst, rank):
        report = jobs.resize(src, dst, rank)
        cut = [m for m in report.modules if m.new_rank < m.old_rank]
        rows = [[m.name, m.old_rank, m.new_rank, f"{m.energy:.2%}"] for m in cut]
        text = (f"resized {len(cut)} of {len(report.modules)} modules; retained energy {report.energy:.2%} overall, "
                f"{report.min_energy:.2%} in the worst module; wrote {dst}")
        return html.table(["module", "old rank", "new rank", "retained energy"], rows), html.message(text)

    def on_merge(base, loras, out, dtype, overwrite):
        report = jobs.merge(base, loras, out, dtype, overwrite)
        return html.message(f"merged into {report['layers']} layers; wrote {out} ({report['layout']} layout)")

    info_btn.click(guarded(lambda p: (info_html(jobs.lora_info(p)), ""), 2), [info_file], [info_out, status])
    c_btn.click(guarded(lambda *a: html.message(jobs.convert(*a)), 1), [c_src, c_dst, c_fmt, c_dtype], [status])
    r_btn.click(guarded(on_resize, 2), [r_src, r_dst, r_rank], [r_out, status])
    m_btn.click(guarded(on_merge, 1), [m_base, m_loras, m_out, m_dtype, m_over], [status])
