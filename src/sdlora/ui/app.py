"""The page: six tabs over the handler modules. Long work (training) runs in its own process and is
watched with a timer, so the page never waits on it."""
from __future__ import annotations

from sdlora.ui import require_gradio
from sdlora.ui.shared import Settings


def build_app(settings: Settings | None = None):
    """The gr.Blocks app (not yet launched)."""
    gr = require_gradio()
    from sdlora.ui import tab_dataset, tab_tools, tab_train

    settings = settings or Settings()
    with gr.Blocks(title="sdlora", analytics_enabled=False) as app:
        gr.HTML("<h2 style='margin:4px 0'>sdlora: train a Stable Diffusion 1.x LoRA</h2>"
                "<p>Dataset → Train → Runs → Compare / Generate. Every action runs the same library code "
                "as the <code>sdlora</code> command line.</p>")
        with gr.Tabs():
            with gr.Tab("Dataset", id="dataset"):
                folders = tab_dataset.build()
            with gr.Tab("Train", id="train"):
                started = tab_train.build_train(settings, folders)
            with gr.Tab("Runs", id="runs"):
                tab_train.build_runs(settings, started)
            with gr.Tab("Compare", id="compare"):
                tab_tools.build_compare(settings)
            with gr.Tab("Generate", id="generate"):
                tab_tools.build_generate(settings)
            with gr.Tab("Files", id="files"):
                tab_tools.build_files(settings)
    return app
