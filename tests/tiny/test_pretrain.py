import json

import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from sdlora.models import load_tokenizer
from sdlora.tiny.pretrain import DEFAULTS, build_parser, main, resolve

MICRO_RUN = ["--device", "cpu", "--arch", "micro", "--pool", "48", "--styled-pool", "16", "--workers", "1",
             "--vae-steps", "2", "--vae-batch", "2", "--unet-steps", "2", "--batch-size", "4", "--log-every", "1",
             "--eval-seeds", "0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "sd-tiny"
    samples = out.parent / "samples.png"
    assert main(["--out", str(out), *MICRO_RUN, "--eval-seeds", "1", "--eval-guidance", "5",
                 "--eval-steps", "2", "--samples", str(samples)]) == 0
    return out


def test_end_to_end_micro_run_writes_a_loadable_model(run, capsys):
    summary = json.loads((run / "pretrain.json").read_text())
    assert summary["args"]["arch"] == "micro" and summary["args"]["unet_steps"] == 2
    assert set(summary["params"]) == {"unet", "vae", "text_encoder"}
    assert summary["unet_last"].startswith("[unet] step 2 ") and summary["vae_last"].startswith("[vae] step 2 ")
    assert set(summary["quality"]) == {"pndm@5.0", "dpm++@5.0"}
    quality = summary["quality"]["dpm++@5.0"]
    assert quality["n"] == 40 and all(0.0 <= quality[k] <= 1.0 for k in ("colour", "shape", "both", "style"))
    assert Image.open(run.parent / "samples.png").size == (5 * 64, 8 * 64)
    pipe = StableDiffusionPipeline.from_pretrained(run, tokenizer=load_tokenizer())
    assert pipe.vae.config.scaling_factor == pytest.approx(summary["scaling_factor"])
    assert pipe.vae.config.scaling_factor > 0
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red star", num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                 output_type="np").images[0]
    assert image.shape == (64, 64, 3)


def test_vae_from_skips_stage_one(run, tmp_path, capsys):
    out = tmp_path / "again"
    assert main(["--out", str(out), "--vae-from", str(run), *MICRO_RUN]) == 0
    printed = capsys.readouterr().out
    assert "[vae]" not in printed and "[unet] step 2" in printed
    a = (run / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert a == (out / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()


def test_vae_from_a_wrong_folder_is_a_one_line_error(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "x"), "--vae-from", str(tmp_path), *MICRO_RUN]) == 2
    assert capsys.readouterr().err.startswith("sdlora: error: --vae-from")


def test_defaults_follow_the_device_and_time_budget_splits():
    gpu = resolve(build_parser().parse_args(["--out", "o", "--device", "cuda"]))
    assert (gpu.batch_size, gpu.unet_time) == (DEFAULTS["cuda"]["batch_size"], DEFAULTS["cuda"]["unet_time"])
    cpu = resolve(build_parser().parse_args(["--out", "o", "--device", "cpu", "--time-budget", "100",
                                             "--batch-size", "3"]))
    assert (cpu.batch_size, cpu.pool, cpu.vae_time, cpu.unet_time) == (3, DEFAULTS["cpu"]["pool"], 25.0, 75.0)
