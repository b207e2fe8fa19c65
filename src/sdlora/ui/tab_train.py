"""Train tab (recipe -> form generated from the config tree -> live TOML and command -> Start/Stop/
Resume) and Runs tab (list runs, watch one: progress, curves, samples, log, summary)."""
from __future__ import annotations

from pathlib import Path

from sdlora.config import to_toml
from sdlora.ui import dataset, html, require_gradio, runner, runstate, trainform
from sdlora.ui.shared import Settings, guarded

DEFAULTS = "(defaults)"
REFRESH_SECONDS = 2.0


def _sources(folders: str):
    return dataset.parse_folders(folders) if folders.strip() else []


def resolve(form, recipe: str, folders: str, values: list):
    """(config, TOML, command) for the form; SdloraError names the bad field."""
    path = None if recipe in (None, "", DEFAULTS) else recipe
    cfg = trainform.build_config(form, values, _sources(folders), trainform.load_recipe(path))
    return cfg, to_toml(cfg), trainform.command(path, cfg)


def build_train(settings: Settings, folders):
    """Lay out the Train tab; returns the textbox holding the run folder last started or resumed."""
    gr = require_gradio()
    form = trainform.fields()
    choices = [DEFAULTS] + trainform.recipes(settings.examples, settings.runs_root)
    with gr.Row():
        recipe = gr.Dropdown(choices, value=DEFAULTS, label="Start from", allow_custom_value=True, scale=4,
                             info="a recipe in examples/ or a run's config.toml", elem_id="tr-recipe")
        load_btn = gr.Button("Load", scale=1, elem_id="tr-load")
    with gr.Row():
        with gr.Column(scale=3):
            gr.HTML(html.message("Images: the folders on the Dataset tab"))
            widgets = _form_widgets(gr, form)
        with gr.Column(scale=2):
            status = gr.HTML(elem_id="tr-status")
            with gr.Row():
                start_btn = gr.Button("Start", variant="primary", elem_id="tr-start")
                stop_btn = gr.Button("Stop", variant="stop", elem_id="tr-stop")
                resume_btn = gr.Button("Resume", elem_id="tr-resume")
            run_dir = gr.Textbox(label="Run folder", interactive=False, elem_id="tr-run")
            command = gr.Code(label="Equivalent command", language="shell", lines=2, interactive=False,
                              elem_id="tr-command")
            toml = gr.Code(label="Resolved config (TOML)", lines=20, interactive=False, elem_id="tr-toml")
    comps = [widgets[f.key] for f in form]

    def on_load(path):
        path = None if path in (None, "", DEFAULTS) else path
        cfg = trainform.load_recipe(path)
        sources = [s for s in cfg.data.sources if Path(s.path).is_dir()]
        text = dataset.format_folders(sources) if sources and len(sources) == len(cfg.data.sources) else gr.skip()
        return (*trainform.form_values(cfg, form), text, html.message(f"loaded {path or 'the defaults'}"))

    def on_change(path, folder_text, *values):
        _, text, line = resolve(form, path, folder_text, list(values))
        return text, line, html.message("settings are valid")

    def on_start(path, folder_text, *values):
        cfg, _, _ = resolve(form, path, folder_text, list(values))
        where = runner.start(cfg)
        return str(where), html.message(f"started training in {where}; watch it on the Runs tab")

    def on_stop(path, folder_text, *values):
        cfg, _, _ = resolve(form, path, folder_text, list(values))
        runner.stop(cfg.save.output_dir)
        return cfg.save.output_dir, html.message("stop requested: the trainer saves a checkpoint, then ends")

    def on_resume(path, folder_text, *values):
        cfg, _, _ = resolve(form, path, folder_text, list(values))
        where = runner.resume(cfg.save.output_dir)
        return str(where), html.message(f"resumed {where}")

    preview = guarded(on_change, 3)
    load_btn.click(guarded(on_load, len(comps) + 2), [recipe], comps + [folders, status])
    gr.on([c.change for c in comps] + [folders.change], preview, [recipe, folders] + comps, [toml, command, status],
          trigger_mode="always_last", show_progress="hidden")
    for button, fn in ((start_btn, on_start), (stop_btn, on_stop), (resume_btn, on_resume)):
        button.click(guarded(fn, 2), [recipe, folders] + comps, [run_dir, status])
    return run_dir


def _form_widgets(gr, form: list[trainform.Field]) -> dict:
    """The common settings, then every other one in an accordion per config section."""
    widgets, rest = {}, form[len(trainform.COMMON):]
    with gr.Group():
        for f in form[:len(trainform.COMMON)]:
            widgets[f.key] = _widget(gr, f)
    with gr.Accordion("All settings (generated from the config reference)", open=False):
        for section in dict.fromkeys(f.key.split(".")[0] for f in rest):
            with gr.Accordion(f"[{section}]", open=False):
                for f in rest:
                    if f.key.split(".")[0] == section:
                        widgets[f.key] = _widget(gr, f)
    return widgets


def _widget(gr, f: trainform.Field):
    value = trainform.to_widget(f, trainform.flatten(trainform.to_dict(trainform.RunConfig()))[f.key])
    info = f"{f.doc} ({f.type_name}{', ' + f.allowed if f.allowed else ''})"
    if f.kind == "choice":
        return gr.Dropdown([str(c) for c in f.choices], value=value, label=f.key, info=info)
    if f.kind == "bool":
        return gr.Checkbox(value=value, label=f.key, info=info)
    if f.kind == "multi":
        return gr.CheckboxGroup([str(c) for c in f.choices], value=value, label=f.key, info=info)
    lines = 3 if f.kind == "lines" else 1
    return gr.Textbox(value=value, label=f.key, info=info + (": one per line" if f.kind == "lines" else ""),
                      lines=lines, elem_id="tr-" + f.key.replace(".", "-").replace("_", "-"))


# ----------------------------------------------------------------------------- Runs tab

def runs_table(root: str):
    runs = runstate.list_runs(root)
    rows = []
    for path in runs:
        view = runstate.read_run(path)
        rows.append([str(path), view.progress_text(), len(view.samples), len(view.files)])
    return runs, html.table(["run folder", "status", "sample grids", "LoRA files"], rows)


def curves(view: runstate.RunView):
    import pandas as pd

    loss = pd.DataFrame([(s, v, "loss") for s, v, _, _ in view.losses] + [(s, v, "smoothed") for s, _, v, _ in view.losses]
                        + [(s, v, "validation") for s, v in view.validation], columns=["step", "value", "series"])
    lr = pd.DataFrame([(s, v) for s, _, _, v in view.losses], columns=["step", "lr"])
    return loss.astype({"step": int, "value": float}), lr.astype({"step": int, "lr": float})


def show_run(path: str, seen: tuple):
    """Everything the Runs tab shows for one run; all skipped when nothing changed since `seen`."""
    gr = require_gradio()
    if not path:
        return (*[gr.skip()] * 6, seen, html.message("choose a run folder"))
    view = runstate.read_run(path)
    key = (view.status, view.step, view.log_tail, tuple(map(str, view.samples)))
    if key == seen:
        return (*[gr.skip()] * 7, gr.skip())
    loss, lr = curves(view)
    if view.losses:  # a plot first sent an empty frame draws no lines later (gradio 6): wait for data
        loss_out, lr_out = loss, lr
    else:
        loss_out, lr_out = gr.skip(), gr.skip()
    samples = [(str(p), runstate.sample_label(p)) for p in reversed(view.samples)]
    summary = "".join(html.message(line, "warn" if "WARNING" in line else
                                   "error" if line.startswith("error") else "ok") for line in view.summary)
    files = html.table(["LoRA files"], [[str(p)] for p in view.files]) if view.files else ""
    return (html.message(view.progress_text()), loss_out, lr_out, samples, summary + files, view.log_tail, key,
            html.message(f"showing {path}"))


def build_runs(settings: Settings, started):
    gr = require_gradio()
    with gr.Row():
        root = gr.Textbox(settings.runs_root, label="Runs folder", scale=3)
        list_btn = gr.Button("List runs", scale=1, elem_id="rn-list")
    table = gr.HTML()
    with gr.Row():
        run = gr.Dropdown([], label="Open run", allow_custom_value=True, scale=4, elem_id="rn-run")
        stop_btn = gr.Button("Stop", variant="stop", scale=1, elem_id="rn-stop")
        resume_btn = gr.Button("Resume", scale=1, elem_id="rn-resume")
    status = gr.HTML(elem_id="rn-status")
    progress = gr.HTML(elem_id="rn-progress")
    with gr.Row():
        loss = gr.LinePlot(x="step", y="value", color="series", title="loss", elem_id="rn-loss", height=260)
        lr = gr.LinePlot(x="step", y="lr", title="learning rate", elem_id="rn-lr", height=260)
    samples = gr.Gallery(label="Sample grids (newest first; the base model at step 0)", columns=2, height=420,
                         elem_id="rn-samples")
    summary = gr.HTML(elem_id="rn-summary")
    tail = gr.Code(label="Log (last lines)", lines=10, interactive=False, elem_id="rn-log")
    seen = gr.State(())
    outputs = [progress, loss, lr, samples, summary, tail, seen, status]

    def on_list(folder):
        runs, text = runs_table(folder)
        return gr.update(choices=[str(p) for p in runs]), text, html.message(f"{len(runs)} runs in {folder}")

    def on_stop(path):
        runner.stop(path)
        return html.message("stop requested: the trainer saves a checkpoint, then ends")

    def on_resume(path):
        runner.resume(path)
        return html.message(f"resumed {path}")

    list_btn.click(guarded(on_list, 3), [root], [run, table, status])
    run.change(guarded(show_run, len(outputs)), [run, gr.State(())], outputs)
    started.change(lambda path: gr.update(value=path, choices=[path]), [started], [run])
    stop_btn.click(guarded(on_stop, 1), [run], [status])
    resume_btn.click(guarded(on_resume, 1), [run], [status])
    gr.Timer(REFRESH_SECONDS).tick(guarded(show_run, len(outputs)), [run, seen], outputs, show_progress="hidden")
