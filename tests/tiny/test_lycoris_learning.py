"""LoHa and LoKr learn: short runs through `sdlora train`'s entry point on sd-tiny, the demo's striped
style set and recipe (sdlora.tiny.demo), each algorithm with its own settings, then the checker's style
rate on held-out seeds with the written kohya/LyCORIS file attached, against the base model.

A run whose factors never move (a zero-initialised half without gradient, a lost scale, a file that
drops factors) stays at the base rate; the 200-step figures beside LoRA's are in benchmarks/RESULTS.md."""
import pytest

pytestmark = pytest.mark.slow

STEPS, BATCH, IMAGES, PROMPTS = 90, 4, 16, 10
RUNS = {"loha": ["lora.algorithm=loha", "lora.rank=4"], "lokr": ["lora.algorithm=lokr", "lora.rank=8"]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    from sdlora.tiny.demo import DemoSettings, train_flags
    from sdlora.tiny.demo_data import write_style_dataset
    from sdlora.train.entry import run

    out = tmp_path_factory.mktemp("lycoris-learning")
    write_style_dataset(out / "data", IMAGES)
    files = {}
    for algo, sets in RUNS.items():
        settings = DemoSettings(output=out, steps=STEPS, batch_size=BATCH)
        flags = {**train_flags(settings, out / algo), "save.formats": ["kohya"]}
        result = run(None, sets, flags, [str(out / "data")])
        assert result.status == "done"
        files[algo] = result.lora_files[0]
    return files


def test_loha_and_lokr_learn_the_style(trained):
    from sdlora.formats import apply
    from sdlora.formats.io import load_lora_file
    from sdlora.generate.job import load_model
    from sdlora.tiny.demo import SD_TINY_GUIDANCE, TRIGGER_TEMPLATE
    from sdlora.tiny.demo_data import DEMO_STYLE
    from sdlora.tiny.demo_eval import eval_prompts, eval_seeds, rates

    components = load_model("tiny", "fp32")
    settings = dict(expected_style=DEMO_STYLE, seeds=eval_seeds(PROMPTS, 1), guidance=SD_TINY_GUIDANCE, steps=20)
    prompts = eval_prompts(TRIGGER_TEMPLATE, PROMPTS)
    base = rates(components, prompts, desc="base", **settings)["style"]
    assert base <= 0.2
    for algo, path in trained.items():
        lora, metadata, _ = load_lora_file(path)
        assert metadata["ss_network_module"] == "lycoris.kohya" and algo in metadata["ss_network_args"]
        apply.attach(components, lora, adapter=algo)
        style = rates(components, prompts, desc=algo, **settings)["style"]
        apply.detach(components, algo)
        assert style - base >= 0.4, (algo, base, style)
