"""sdlora.models.architecture: production code builds SD from configs without the test stand-ins."""
import ast
from pathlib import Path

import sdlora
from sdlora.models.architecture import build_unet, sd14_config, sd14_scheduler

SRC = Path(sdlora.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_production_module_imports_the_stand_ins():
    """skeleton (random stand-ins for tests) imports the tokenizer; no production module imports it back
    (the package's __init__ only re-exports tiny_components for users' tests)."""
    users = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if p.name != "skeleton.py"
                   and p != SRC / "models" / "__init__.py" and "sdlora.models.skeleton" in imported_modules(p))
    assert users == []


def test_bundled_configs_build_the_sd14_architecture():
    assert sd14_config("unet")["cross_attention_dim"] == 768
    assert sd14_scheduler().config.num_train_timesteps == 1000
    tiny = dict(sd14_config("unet"), block_out_channels=[32, 64], down_block_types=["CrossAttnDownBlock2D",
                "DownBlock2D"], up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], layers_per_block=1,
                cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8)
    assert build_unet(tiny).config.cross_attention_dim == 32
