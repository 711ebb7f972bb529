"""Model FLOP utilisation that a machine's speed change cannot push above 1.

The old meter (6 x parameters x tokens/s over one 2048 x 2048 matmul) printed MFU 1.91 for all-MiniLM-L6-v2 on
2026-12-02: it counted the embedding tables (11.9M of the model's 22.7M parameters) as matmul work, which a lookup
is not, and it took the machine's peak from one shape, measured once, while the cores were shared.

Here the numerator is the matmul FLOPs the encoder really does on the padded batches it was given
(`encoder_flops`, checked against PyTorch's own FLOP counter in tests/test_mfu.py), and the denominator is the best
rate the machine reaches on the model's own matmul shapes (`matmul_peak`: same dtype and thread count, warmed up,
best of several rounds), measured before and after the run: MFU is reported against the faster of the two, with
both, so a machine that changed speed shows as a spread instead of a wrong ratio.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch


def encoder_flops(config, batch: int, length: int, *, backward: bool = True) -> int:
    """Matmul FLOPs of a BERT-style encoder on one (batch, length) padded batch: forward, plus backward (twice
    the forward: gradients for both operands of every matmul) unless `backward` is False.

    Per layer, with t = batch x length tokens, hidden h, intermediate i: the Q, K, V and output projections
    (4 x 2·t·h·h), attention scores and attention-weighted values (2 x 2·batch·length²·h), the MLP (2 x 2·t·h·i).
    The embedding lookup, layer norms, softmax and activations are not matmuls and are left out (MFU is then a
    slight underestimate), as is a pooler head (st-bge pools CLS or mean from the hidden states).
    """
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    tokens = batch * length
    per_layer = 8 * tokens * h * h + 4 * batch * length * length * h + 4 * tokens * h * i
    forward = layers * per_layer
    return 3 * forward if backward else forward


def model_matmul_shapes(config, tokens: int) -> list[tuple[int, int, int]]:
    """The (m, k, n) shapes of the encoder's weight matmuls on `tokens` tokens: projections and the MLP."""
    h, i = config.hidden_size, config.intermediate_size
    return [(tokens, h, h), (tokens, h, i), (tokens, i, h)]


def matmul_peak(
    shapes: list[tuple[int, int, int]], *, rounds: int = 5, repeats: int = 5, dtype=torch.float32, device="cpu"
) -> float:
    """The best FLOP/s this machine reaches on `shapes` (each warmed up, best round of `repeats` matmuls), in
    `dtype` on `device` (CUDA timings wait for the kernels)."""
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k, dtype=dtype, device=device), torch.randn(k, n, dtype=dtype, device=device)
        a @ b
        sync()
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(repeats):
                a @ b
            sync()
            best = max(best, 2 * m * k * n * repeats / (time.perf_counter() - start))
    return best


@dataclass(frozen=True)
class Utilisation:
    """Achieved matmul FLOP/s against the peaks measured before and after the run."""

    flops_per_second: float
    peak_before: float
    peak_after: float

    @property
    def peak(self) -> float:
        return max(self.peak_before, self.peak_after)

    @property
    def mfu(self) -> float:
        return self.flops_per_second / self.peak

    @property
    def mfu_spread(self) -> tuple[float, float]:
        """MFU against each peak (the slower peak gives the higher MFU)."""
        return self.flops_per_second / self.peak_before, self.flops_per_second / self.peak_after

    def to_dict(self) -> dict[str, float]:
        low, high = sorted(self.mfu_spread)
        return {
            "achieved_flops_per_second": self.flops_per_second,
            "peak_before": self.peak_before,
            "peak_after": self.peak_after,
            "mfu": self.mfu,
            "mfu_if_peak_before": self.mfu_spread[0],
            "mfu_if_peak_after": self.mfu_spread[1],
            "mfu_spread": high - low,
        }
