"""A backbone returning the outputs of named submodules (super-gradients' ``MultiOutputBackbone``).

``MultiOutputBackbone(module, ["features.6", "features.13", "features.18"])(x)`` returns those three
maps, in that order, from one forward pass. The submodules are run by walking the module tree rather
than through forward hooks, so the whole pass is plain module calls that ``torch.compile(...,
fullgraph=True)`` traces (hooks that write into outer state break the graph), and nothing after the
last requested output is computed.

The walk assumes what torchvision's ``IntermediateLayerGetter`` assumes: the children of ``module``
are registered in the order its forward applies them, each once, to the previous child's output.
Below the top level the walk only descends into ``nn.Sequential`` containers, for which this holds
by definition; a requested module nested in anything else (a residual block, say) is rejected. Keys
are those of ``module`` under the prefix ``module.``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

# A plan step: (child module, output slot or -1, sub-plan or None). Runs the child as a whole, or,
# with a sub-plan, walks its children; the result goes to the slot when the child is requested.
_Step = tuple[nn.Module, int, "list[_Step] | None"]


class MultiOutputBackbone(nn.Module):
    """Runs ``module`` and returns ``[output of module.get_submodule(name) for name in out_layers]``.
    ``out_layers`` are dotted submodule names (``"layer3"``, ``"features.13"``); see the module doc
    for the execution-order assumption. :meth:`probe_channels` gives the outputs' channel counts."""

    def __init__(self, module: nn.Module, out_layers: Sequence[str]):
        super().__init__()
        if not out_layers:
            raise ValueError("MultiOutputBackbone: out_layers must name at least one submodule")
        if len(set(out_layers)) != len(out_layers):
            raise ValueError(f"MultiOutputBackbone: out_layers has duplicates: {list(out_layers)}")
        for name in out_layers:
            module.get_submodule(name)  # raises AttributeError naming the missing part
        self.module = module
        self.out_layers = list(out_layers)
        slots = {name: i for i, name in enumerate(self.out_layers)}
        remaining = set(slots)
        # Plain attribute (not a ModuleList): the modules stay registered once, under ``module``.
        self._plan = self._build_plan(module, "", slots, remaining)

    @staticmethod
    def _build_plan(
        parent: nn.Module, prefix: str, slots: dict, remaining: set, top: bool = True, complete: bool = False
    ) -> list[_Step]:
        """The steps that run ``parent``'s children; ``complete`` keeps all of them (the parent's own
        output is requested), otherwise the plan stops once nothing requested remains."""
        plan: list[_Step] = []
        for name, child in parent.named_children():
            if not remaining and not complete:
                break  # everything requested is computed; the rest of the network is skipped
            full = prefix + name
            requested = full in remaining
            remaining.discard(full)
            sub = None
            if any(n.startswith(full + ".") for n in remaining):
                if not isinstance(child, nn.Sequential):
                    raise ValueError(
                        f"MultiOutputBackbone: {full!r} ({type(child).__name__}) holds requested outputs but "
                        "is not an nn.Sequential, so its forward cannot be replayed child by child"
                    )
                sub = MultiOutputBackbone._build_plan(
                    child, full + ".", slots, remaining, top=False, complete=complete or requested
                )
            plan.append((child, slots[full] if requested else -1, sub))
        if top and remaining:
            raise ValueError(f"MultiOutputBackbone: could not place {sorted(remaining)}")
        return plan

    @staticmethod
    def _run(plan: list[_Step], x: Tensor, outputs: list[Tensor | None]) -> Tensor:
        for child, slot, sub in plan:
            x = child(x) if sub is None else MultiOutputBackbone._run(sub, x, outputs)
            if slot >= 0:
                outputs[slot] = x
        return x

    def forward(self, x: Tensor) -> list[Tensor]:
        outputs: list[Tensor | None] = [None] * len(self.out_layers)
        self._run(self._plan, x, outputs)
        return outputs  # every slot is filled: the plan ends at the last requested module

    @torch.no_grad()
    def probe_channels(self, in_channels: int = 3, size: int = 64) -> list[int]:
        """The outputs' channel counts, from an eval-mode pass on a zero ``[1, in_channels, size,
        size]`` input (eval so BatchNorm statistics are untouched; each module's mode is restored)."""
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            param = next(self.parameters(), None)
            x = torch.zeros(1, in_channels, size, size, device=None if param is None else param.device)
            return [y.shape[1] for y in self(x)]
        finally:
            for m, mode in modes:
                m.training = mode
