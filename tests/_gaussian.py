"""Sampling tolerances for tests that check a tensor's draws against N(0, sigma^2)."""
from __future__ import annotations

import math

import torch


def std_tol(n: int, sigma: float, k: float = 5.0) -> float:
    """k standard errors of the sample std of n Gaussian draws: se ~ sigma / sqrt(2n)."""
    return k * sigma / math.sqrt(2 * n)


def check_gaussian(w: torch.Tensor, sigma: float) -> None:
    """Sample mean and std of w agree with N(0, sigma^2) within 5 standard errors."""
    w = w.detach().double().flatten()
    n = w.numel()
    assert abs(w.mean().item()) < 5 * sigma / math.sqrt(n)
    assert abs(w.std(correction=0).item() - sigma) < std_tol(n, sigma)
