"""The training metadata kohya's trainer writes for LyCORIS networks (`--network_module lycoris.kohya`).

    ss_network_module  lycoris.kohya
    ss_network_dim     the most common rank of the Linear / 1x1 modules   (ss_network_alpha: their alpha)
    ss_network_args    JSON of the network arguments, every value a string as LyCORIS receives them:
                       {"algo": "lokr", "conv_dim": "8", "conv_alpha": "4", "use_tucker": "True", ...}

A1111, ComfyUI and LyCORIS's own loader read the tensors, not these fields; they tell people and
tools (civitai, `sdlora info`) what the file is. A file mixing algorithms names the most common one.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping

import torch

from sdlora.formats import canonical as C
from sdlora.formats import networks

# SD 1.x module paths of the k x k (3x3) convolutions: a LoHa / LoKr file may store their factors
# flattened, so the kernel is read off the module name.
KXK_CONV = re.compile(r"(?:.*\.)?(?:resnets\.\d+\.conv[12]|(?:down|up)samplers\.\d+\.conv|conv_in|conv_out)")


def is_kxk_conv(path: str, params: Mapping[str, torch.Tensor]) -> bool:
    if not networks.is_factored(params):
        down = params[C.DOWN]
        return down.dim() == 4 and tuple(down.shape[2:]) != (1, 1)
    return bool(KXK_CONV.fullmatch(path))


def _most_common(values) -> str:
    value = Counter(values).most_common(1)[0][0]
    return f"{value:g}" if isinstance(value, float) else str(value)


def lycoris_metadata(modules: Mapping[C.Module, Mapping[str, torch.Tensor]]) -> dict[str, str]:
    """kohya's ss_* fields for a file holding LoHa / LoKr modules (LoRA modules may be mixed in)."""
    factored = [p for p in modules.values() if networks.is_factored(p)]
    conv = [p for (_, path), p in modules.items() if is_kxk_conv(path, p)]
    linear = [p for (_, path), p in modules.items() if not is_kxk_conv(path, p)]
    meta = {"ss_network_module": "lycoris.kohya"}
    args = {"algo": _most_common(networks.algorithm(p) for p in factored)}
    if linear:
        meta["ss_network_dim"] = _most_common(C.rank(p) for p in linear)
        meta["ss_network_alpha"] = _most_common(C.alpha(p) for p in linear)
    if conv:
        args["conv_dim"] = _most_common(C.rank(p) for p in conv)
        args["conv_alpha"] = _most_common(C.alpha(p) for p in conv)
    if any("hada_t1" in p or "lokr_t2" in p for p in factored):
        args["use_tucker"] = "True"
    if any(networks.full_rank_lokr(p) for p in factored):
        args["full_matrix"] = "True"
    if any("lokr_w1_a" in p for p in factored):
        args["decompose_both"] = "True"
    if any(C.DORA in p for p in modules.values()):
        args["dora_wd"] = "True"
    meta["ss_network_args"] = json.dumps(args)
    components = {c for c, _ in modules}
    meta["ss_network_train_unet_only"] = str(components == {"unet"})
    meta["ss_network_train_text_encoder_only"] = str(components == {"text_encoder"})
    return meta
