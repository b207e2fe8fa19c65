"""What a sampler must assume about the model it drives: its target and its noise schedule.

SD 1.4 predicts epsilon on its own scaled_linear schedule. A LoRA trained with
`train.prediction_type = "v_prediction"` and `train.zero_terminal_snr` turns it into a v-predicting model
of a rescaled schedule whose last timestep is pure noise; sampling it correctly needs the same schedule
(`rescale_betas_zero_snr`), the v target, and timesteps that start at that last step (`trailing`
spacing, Lin et al. 2024). The LoRA file says so in kohya's metadata keys, which kohya's own trainer
writes too: `ss_v_parameterization` and `ss_zero_terminal_snr` ("True"/"False").
"""
from __future__ import annotations

from dataclasses import astuple, dataclass

from sdlora.errors import SdloraError

V_KEY, ZSNR_KEY = "ss_v_parameterization", "ss_zero_terminal_snr"
SPACINGS = ("leading", "linspace", "trailing")


@dataclass(frozen=True)
class NoiseSettings:
    """None: not said (the model's own scheduler config, or what `over` fills in)."""

    prediction_type: str | None = None  # "epsilon" or "v_prediction"
    zero_terminal_snr: bool | None = None
    timestep_spacing: str | None = None  # None: "trailing" with zero terminal SNR, else each sampler's default

    def over(self, other: "NoiseSettings") -> "NoiseSettings":
        """These settings where they say something, `other`'s elsewhere (command line over the LoRA files)."""
        return NoiseSettings(*(mine if mine is not None else theirs for mine, theirs in
                               zip(astuple(self), astuple(other))))

    def overrides(self) -> dict:
        """Scheduler config entries (diffusers' names) that differ from the model's."""
        out: dict = {}
        if self.prediction_type is not None:
            out["prediction_type"] = self.prediction_type
        if self.zero_terminal_snr:
            out["rescale_betas_zero_snr"] = True
        spacing = self.timestep_spacing or ("trailing" if self.zero_terminal_snr else None)
        if spacing is not None:
            if spacing not in SPACINGS:
                raise SdloraError(f"timestep spacing {spacing!r} is not one of {', '.join(SPACINGS)}")
            out["timestep_spacing"] = spacing
        return out

    def describe(self) -> str:
        parts = [self.prediction_type or ""] + (["zero terminal SNR"] if self.zero_terminal_snr else [])
        return ", ".join(p for p in parts if p) or "the model's own"


def _flag(metadata: dict, key: str) -> bool | None:
    value = str(metadata.get(key, "")).strip().lower()
    return {"true": True, "false": False}.get(value)


def settings_from_metadata(files: list[tuple[str, dict]]) -> NoiseSettings:
    """The settings the LoRA files (name, metadata) were trained for; files that do not say are ignored.

    Files that disagree cannot be sampled together: SdloraError naming them."""
    said = {}
    for name, metadata in files:
        v, zsnr = _flag(metadata, V_KEY), _flag(metadata, ZSNR_KEY)
        if v is not None or zsnr is not None:
            said[name] = (bool(v), bool(zsnr))
    if len(set(said.values())) > 1:
        listed = "; ".join(f"{name}: v-prediction {v}, zero terminal SNR {z}" for name, (v, z) in said.items())
        raise SdloraError(f"the LoRA files were trained for different noise schedules ({listed}); "
                          "use them one at a time")
    if not said:
        return NoiseSettings()
    v, zsnr = next(iter(said.values()))
    return NoiseSettings("v_prediction" if v else None, True if zsnr else None)


def training_metadata(prediction_type: str, zero_terminal_snr: bool) -> dict[str, str]:
    """The metadata entries a trainer writes so that `settings_from_metadata` reads its settings back."""
    return {V_KEY: str(prediction_type == "v_prediction"), ZSNR_KEY: str(bool(zero_terminal_snr))}


def require_own_schedule(files: list[tuple[str, dict]], command: str) -> None:
    """Refuse LoRA files trained for another target or schedule in a command that samples every column
    with the base model's own scheduler (its images would be wrong without a word)."""
    for name, metadata in files:
        said = settings_from_metadata([(name, metadata)])
        if said != NoiseSettings():
            raise SdloraError(f"{command}: {name} was trained for {said.describe()}, and {command} samples every "
                              "column with the base model's own schedule; sample it with `sdlora generate`, "
                              "which reads these settings from the file")
