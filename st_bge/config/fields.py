"""Checks of values that several recipe sections share."""

from __future__ import annotations

from collections.abc import Sequence

from st_bge.bge import MODES
from st_bge.errors import ConfigError


def check_mode_weights(name: str, weights: Sequence[float]) -> None:
    """Field `name` holds one non-negative weight per BGE-M3 mode, in `MODES` order.

    Raises:
        ConfigError: naming the field, if not.
    """
    if len(weights) != len(MODES) or any(weight < 0 for weight in weights):
        raise ConfigError(f"{name}: three non-negative weights ({', '.join(MODES)}) are needed, got {weights}")
