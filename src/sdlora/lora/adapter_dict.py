"""AdapterDict: the wrappers' table of adapters, keyed by any adapter name a user or a file gives.

nn.ModuleDict refuses a key that is an attribute of the dict (`train`, `to`, `keys`, `forward`,
`training`...): a LoRA file named `train.safetensors` became adapter `train` and crashed. The one
place adapter names meet module attributes is here: a name that would collide (or that starts with
the escape mark) is stored under ESCAPE + name; every other name is stored as it is, so state-dict
keys like `to_q.adapters.default.down.weight` are unchanged. Lookups, iteration and `in` see only
the names the caller gave.
"""
from __future__ import annotations

from collections.abc import Iterator

from torch import nn

ESCAPE = "~"


class AdapterDict(nn.ModuleDict):
    """nn.ModuleDict whose public keys are adapter names, stored escaped when they would collide."""

    def _stored(self, name: str) -> str:
        collides = hasattr(type(self), name) or name in vars(self) or name.startswith(ESCAPE)
        return ESCAPE + name if collides else name

    @staticmethod
    def _public(key: str) -> str:
        return key[len(ESCAPE):] if key.startswith(ESCAPE) else key

    def __getitem__(self, name: str) -> nn.Module:
        return self._modules[self._stored(name)]

    def __setitem__(self, name: str, module: nn.Module) -> None:
        self.add_module(self._stored(name), module)

    def __delitem__(self, name: str) -> None:
        del self._modules[self._stored(name)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._stored(name) in self._modules

    def __iter__(self) -> Iterator[str]:
        return (self._public(key) for key in self._modules)

    def keys(self):
        return list(self)

    def items(self):
        return [(self._public(key), module) for key, module in self._modules.items()]

    def pop(self, name: str) -> nn.Module:
        return self._modules.pop(self._stored(name))
