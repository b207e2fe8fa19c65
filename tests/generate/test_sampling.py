import numpy as np
import pytest
import torch

from sdlora.errors import SdloraError
from sdlora.generate.prompts import PromptSpec
from sdlora.generate.sampling import Sampler, resolve_device, resolve_dtype
from sdlora.imaging import to_image

SPEC = PromptSpec("a red circle on a blue square", "blurry", seed=5, steps=2, cfg=4.0, width=32, height=24)


@pytest.fixture(scope="module")
def sampler():
    from sdlora.models import tiny_components

    return Sampler(tiny_components(0))


def test_same_seed_same_image_and_seeds_differ(sampler):
    a, b = sampler.arrays(SPEC, [5, 6]), sampler.arrays(SPEC, [5])
    assert a.shape == (2, 24, 32, 3) and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert np.abs(a[0] - b[0]).max() < 1e-5  # an image depends on its seed, not on its batch
    assert np.abs(a[0] - a[1]).max() > 1e-2


def test_samples_number_seeds_from_the_spec_seed(sampler):
    samples = sampler.samples(SPEC, count=3, batch_size=2)
    assert [s.seed for s in samples] == [5, 6, 7]
    assert all(s.image.size == (32, 24) and s.spec == SPEC for s in samples)
    alone = to_image(sampler.arrays(SPEC, [7])[0])
    assert np.abs(np.asarray(alone, np.int16) - np.asarray(samples[2].image, np.int16)).max() <= 1


def test_prompts_sampled_alike_share_a_batch_and_each_image_stays_its_own(sampler, monkeypatch):
    other = SPEC.replace(prompt="a green star", negative_prompt="", seed=9)
    jobs = [(SPEC, 5), (other, 9), (SPEC.replace(steps=3), 5), (other, 10)]
    calls = []
    batch_arrays = sampler.batch_arrays
    monkeypatch.setattr(sampler, "batch_arrays", lambda chunk: calls.append(len(chunk)) or batch_arrays(chunk))
    done = []
    samples = sampler.many(jobs, batch_size=4, done=done.append)
    assert calls == [2, 1, 1]  # a change of steps ends a batch: only prompts sampled alike go together
    assert [len(batch) for batch in done] == calls
    assert [(s.spec, s.seed) for s in samples] == jobs
    for sample, (spec, seed) in zip(samples, jobs):  # the same image as sampled on its own, up to rounding
        alone = to_image(batch_arrays([(spec, seed)])[0])
        assert np.abs(np.asarray(alone, np.int16) - np.asarray(sample.image, np.int16)).max() <= 1
    assert np.abs(np.asarray(samples[0].image, np.int16) - np.asarray(samples[1].image, np.int16)).max() > 10
    with pytest.raises(ValueError, match="same steps"):
        batch_arrays(jobs[1:3])


@pytest.mark.parametrize("scheduler", ["ddim", "euler_a", "dpmpp_2m_karras"])
def test_scheduler_choice_changes_the_sampler(sampler, scheduler):
    other = sampler.arrays(SPEC.replace(scheduler=scheduler), [5])
    assert type(sampler.pipeline.scheduler).__name__ != "PNDMScheduler"
    assert np.abs(other - sampler.arrays(SPEC, [5])).max() > 1e-3


def test_bad_settings_are_refused(sampler):
    with pytest.raises(SdloraError, match="width 30 is not a positive multiple of 8"):
        sampler.arrays(SPEC.replace(width=30), [1])
    with pytest.raises(SdloraError, match="at least 1"):
        sampler.samples(SPEC, count=0)


@pytest.mark.parametrize("name, device, expected", [
    ("auto", "cpu", torch.float32), ("auto", "cuda", torch.float16), ("fp16", "cpu", torch.float16),
    ("bf16", "cpu", torch.bfloat16), ("fp32", "cuda", torch.float32),
])
def test_resolve_dtype(name, device, expected):
    assert resolve_dtype(name, torch.device(device)) == expected


def test_resolve_device_and_dtype_errors():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(SdloraError, match="not a device"):
        resolve_device("gpu0")
    with pytest.raises(SdloraError, match="choose one of auto, fp32"):
        resolve_dtype("int8", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(SdloraError, match="CUDA is not available"):
            resolve_device("cuda")
