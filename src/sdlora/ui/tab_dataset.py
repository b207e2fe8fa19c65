"""Dataset tab: folders with role and repeats, the inspect report, the gallery with captions, caption
editing (sidecar .txt, atomic) and bulk trigger/tag edits with a preview before anything is written."""
from __future__ import annotations

from sdlora.ui import dataset, html, require_gradio
from sdlora.ui.shared import guarded


def load(folders: str, resolution: float):
    """(report html, gallery, items, status) for the folders text."""
    sources = dataset.parse_folders(folders)
    report = dataset.inspect(sources, int(resolution))
    found = dataset.items(sources)
    gallery = [(item.image, item.caption or "(no caption)") for item in found]
    return html.inspect_report(report), gallery, found, html.message(f"{len(found)} images loaded")


def select(found: list, index: int):
    item = found[index]
    return item.image, item.caption, html.message(f"caption file: {item.sidecar}")


def save(folders: str, found: list, image: str, text: str):
    sources = dataset.parse_folders(folders)
    item = next((i for i in found if i.image == image), None)
    if item is None:
        raise dataset.SdloraError("pick an image in the gallery first")
    path = dataset.save_caption(item, text, sources)
    found = dataset.items(sources)
    gallery = [(i.image, i.caption or "(no caption)") for i in found]
    return gallery, found, html.message(f"saved {path}")


def preview(found: list, mode: str, tag: str, new: str):
    plan = dataset.plan_edit(found, mode, tag, new)
    return html.caption_diff(plan), plan, html.message(f"preview: {len(plan)} files would change; press Apply to write")


def apply(folders: str, plan: list):
    if not plan:
        raise dataset.SdloraError("nothing to apply: press Preview first")
    sources = dataset.parse_folders(folders)
    written = dataset.apply_plan(plan, sources)
    found = dataset.items(sources)
    gallery = [(i.image, i.caption or "(no caption)") for i in found]
    return gallery, found, [], html.message(f"wrote {written} caption files")


def build():
    """Lay out the tab; returns the folders textbox (the Train tab trains on it)."""
    gr = require_gradio()
    found, plan = gr.State([]), gr.State([])
    with gr.Row():
        folders = gr.Textbox(label="Image folders", lines=3, scale=4, elem_id="ds-folders",
                             info="one per line: PATH, or PATH | class | REPEATS (role instance or class)")
        resolution = gr.Number(512, label="resolution", precision=0, scale=1,
                               info="buckets are counted at this training resolution")
    inspect_btn = gr.Button("Inspect", variant="primary", elem_id="ds-inspect")
    status = gr.HTML(elem_id="ds-status")
    with gr.Row():
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="Images and captions", columns=6, height=420, allow_preview=False,
                                 elem_id="ds-gallery")
        with gr.Column(scale=2):
            image = gr.Textbox(label="Selected image", interactive=False, elem_id="ds-image")
            caption = gr.Textbox(label="Caption", lines=3, elem_id="ds-caption")
            where = gr.HTML()
            save_btn = gr.Button("Save caption", elem_id="ds-save")
    with gr.Accordion("Bulk edit: add or replace a trigger word / tag", open=False):
        with gr.Row():
            mode = gr.Dropdown(list(dataset.TRIGGER_MODES), value="add first", label="action")
            tag = gr.Textbox(label="trigger word or tag", elem_id="ds-tag")
            new = gr.Textbox(label="replace with (for replace tag)")
        with gr.Row():
            preview_btn = gr.Button("Preview", elem_id="ds-preview")
            apply_btn = gr.Button("Apply", variant="stop", elem_id="ds-apply")
        diff = gr.HTML(elem_id="ds-diff")
    report = gr.HTML(elem_id="ds-report")

    inspect_btn.click(guarded(load, 4), [folders, resolution], [report, gallery, found, status])

    def on_select(items, evt):
        return select(items, evt.index)

    on_select.__annotations__ = {"evt": gr.SelectData}  # how gradio knows to pass the selection

    gallery.select(on_select, [found], [image, caption, where])
    save_btn.click(guarded(save, 3), [folders, found, image, caption], [gallery, found, status])
    preview_btn.click(guarded(preview, 3), [found, mode, tag, new], [diff, plan, status])
    apply_btn.click(guarded(apply, 4), [folders, plan], [gallery, found, plan, status])
    return folders
