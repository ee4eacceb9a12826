"""A student's architecture as params.yaml gives it (``student:`` and the ``grid:`` rows).

Kept apart from the network (:mod:`echodfkd.student.model`) so that the Pareto report, which
checks reports against these shapes, does not depend on the network's code.
"""

from __future__ import annotations

from dataclasses import dataclass

from echodfkd.errors import InputError


@dataclass(frozen=True)
class StudentShape:
    """A student's architecture: a ``student`` or ``grid.<name>`` section of params.yaml.

    ``blocks`` encoder blocks (resolution levels) of ``layers_per_block`` ConvLSTM layers,
    ``hidden`` channels in block 0 (``hidden * 2**k`` in block k), odd ``kernel_size``, and
    U-Net ``skip`` connections (False: the paper's model). ``StudentNet(**asdict(shape))``.
    """

    blocks: int
    layers_per_block: int
    hidden: int
    kernel_size: int
    skip: bool

    def __post_init__(self) -> None:
        for name in ("blocks", "layers_per_block", "hidden", "kernel_size"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.kernel_size % 2 == 0:
            raise InputError(f"kernel_size must be odd, got {self.kernel_size!r}")
