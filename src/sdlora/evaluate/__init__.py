"""Comparing and evaluating LoRAs: labelled grids, the base-vs-LoRA sweep (`compare`), a self-contained
HTML report, CLIP/DINO features and the metrics papers report (`evaluate`)."""
from sdlora.evaluate.compare import CompareJob, CompareResult, compare
from sdlora.evaluate.evaluation import EvaluateJob, EvaluateResult, evaluate
from sdlora.evaluate.grid import contact_sheet, labelled_grid

__all__ = ["CompareJob", "CompareResult", "EvaluateJob", "EvaluateResult", "compare", "contact_sheet", "evaluate",
           "labelled_grid"]
