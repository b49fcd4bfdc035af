"""HSIC-based mutual-information estimate between two hidden-state vectors (SPEC §7, MI-Peaks).

MI-Peaks (Qian et al. 2025) treats the d coordinates of two hidden states x, y ∈ R^d as d paired
scalar samples (x_i, y_i) and scores their dependence with the normalised HSIC of Fukumizu et
al. (2008), as in the HSIC-bottleneck code it builds on (`hsic_normalized_cca`). With m paired
samples (m = d, or `max_dim` coordinates drawn without replacement by a seeded RNG):

    K_ij = exp(-(x_i - x_j)^2 / (2 σ^2))            L_ij = exp(-(y_i - y_j)^2 / (2 σ^2))
    H    = I_m - (1/m) 1 1^T                        K~ = H K H,   L~ = H L H   (centred Gram)
    R_x  = K~ (K~ + ε m I)^-1                       R_y = L~ (L~ + ε m I)^-1
    Î(x; y) = tr(R_x R_y)                           σ = 50, ε = 1e-5 (the paper's settings)

The authors' code centres on one side only (K H instead of H K H); the trace is the same (both
operators vanish on the constant vector and agree on its complement) and the tests check it.

Computing it (`HSICEstimator.series`, one reference against T steps): R_x = I − c A^-1 with
A = K~_x + cI, c = εm, and R_y = Σ_k w_k u_k u_k^T from the eigendecomposition of L~
(w_k = λ_k / (λ_k + c)), so

    tr(R_x R_y) = Σ_k w_k − c Σ_k w_k u_k^T A^-1 u_k = Σ_k w_k − c ‖C^-1 V‖_F²,
    A = C C^T (Cholesky),  V = [√w_k u_k]_k.

One Cholesky per step instead of an m × m inverse, and the reference is factorised once.
Components with w_k ≤ `rank_tol` (1e-12) are dropped: each contributes w_k (1 − c u_k^T A^-1 u_k)
∈ [0, w_k], so the result moves by at most m · rank_tol; the Gaussian kernel's spectrum decays so
fast that with σ = 50 only a few dozen components remain, which makes the solve cheap.
`normalised_operator` builds R directly (a linear solve: R = (K~ + cI)^-1 K~, equal to
K~ (K~ + cI)^-1 because the two commute) for readers and tests. Everything is float64: with σ = 50
and coordinates of order 1 the kernel is ≈ 1 − d²/2σ², and centring cancels the leading 1, so
float32 would keep only a few digits. All linear algebra runs in torch: mixing numpy's OpenBLAS
threads with torch's in one process made a 256 × 256 eigh take seconds on a busy 2-core machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

SIGMA = 50.0
EPSILON = 1e-5
DEFAULT_MAX_DIM = 1024


def _as_vector(v: Any, name: str) -> np.ndarray:
    """A 1-D float64 copy of a numpy array, torch tensor or sequence."""
    if hasattr(v, "detach"):  # torch tensor, without importing torch here
        v = v.detach().to("cpu").double().numpy()
    arr = np.asarray(v, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a vector, got shape {arr.shape}")
    return arr


def _tensor(samples: Any) -> Any:
    import torch

    return torch.as_tensor(np.asarray(samples, dtype=np.float64))


def centred_gram(samples: Any, sigma: float = SIGMA) -> Any:
    """H K H of the Gaussian kernel on scalar samples, (..., m) -> (..., m, m) float64 torch tensor.

    Centring without building H: subtract row and column means, add back the grand mean.
    """
    x = _tensor(samples)
    gram = x[..., :, None] - x[..., None, :]
    gram.square_().mul_(-1.0 / (2.0 * sigma * sigma)).exp_()
    rows = gram.mean(-1, keepdim=True)
    grand = rows.mean(-2, keepdim=True)
    return gram.sub_(rows).sub_(rows.transpose(-1, -2)).add_(grand)


def normalised_operator(samples: Any, sigma: float = SIGMA, eps: float = EPSILON) -> np.ndarray:
    """R = K~ (K~ + ε m I)^-1 for each row of scalar samples: (..., m) -> (..., m, m)."""
    import torch

    kc = centred_gram(samples, sigma)
    m = kc.shape[-1]
    return torch.linalg.solve(kc + eps * m * torch.eye(m, dtype=kc.dtype), kc).numpy()


def select_coordinates(dim: int, max_dim: int | None, seed: int) -> np.ndarray | None:
    """Which coordinates to keep (sorted), or None for all. Seeded, so every step of an analysis
    uses the same coordinates and runs are reproducible."""
    if max_dim is None or dim <= max_dim:
        return None
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(dim, size=max_dim, replace=False))


@dataclass(frozen=True)
class HSICEstimator:
    """Î(x; y) = tr(R_x R_y) with hidden coordinates as samples (see the module docstring).

    `max_dim` caps the number of coordinates (the cost is O(m^3) per estimate); `chunk` bounds the
    memory of `series` (chunk × m × m float64 matrices at a time).
    """

    sigma: float = SIGMA
    eps: float = EPSILON
    max_dim: int | None = DEFAULT_MAX_DIM
    seed: int = 0
    chunk: int = 16
    rank_tol: float = 1e-12

    def __post_init__(self) -> None:
        if self.sigma <= 0 or self.eps <= 0:
            raise ValueError("sigma and eps must be positive")
        if self.max_dim is not None and self.max_dim < 2:
            raise ValueError("max_dim must be at least 2")
        if self.chunk < 1:
            raise ValueError("chunk must be at least 1")
        if self.rank_tol < 0:
            raise ValueError("rank_tol must be >= 0")

    def __call__(self, x: Any, y: Any) -> float:
        """The estimate for one pair of vectors of equal length."""
        xv, yv = _as_vector(x, "x"), _as_vector(y, "y")
        return float(self.series(xv[None, :], yv)[0])

    def series(self, states: Any, reference: Any) -> np.ndarray:
        """Î(h_t; h_ref) for every row h_t of `states` (T, d) against one reference (d,): shape (T,)."""
        if hasattr(states, "detach"):
            states = states.detach().to("cpu").double().numpy()
        rows = np.asarray(states, dtype=np.float64)
        ref = _as_vector(reference, "reference")
        if rows.ndim != 2 or rows.shape[1] != ref.shape[0]:
            raise ValueError(f"states must be (T, {ref.shape[0]}), got shape {rows.shape}")
        if ref.shape[0] < 2:
            raise ValueError("need at least 2 coordinates")
        keep = select_coordinates(ref.shape[0], self.max_dim, self.seed)
        if keep is not None:
            rows, ref = rows[:, keep], ref[keep]
        import torch

        m = ref.shape[0]
        c = self.eps * m
        lam, u = torch.linalg.eigh(centred_gram(ref, self.sigma))
        lam = lam.clamp(min=0.0)
        w = lam / (lam + c)
        keep = w > self.rank_tol
        v = u[:, keep] * w[keep].sqrt()  # (m, r)
        trace_ref = float(w[keep].sum())
        out = np.empty(rows.shape[0])
        for start in range(0, rows.shape[0], self.chunk):
            a = centred_gram(rows[start : start + self.chunk], self.sigma)
            a.diagonal(dim1=-2, dim2=-1).add_(c)
            chol = torch.linalg.cholesky(a)
            z = torch.linalg.solve_triangular(chol, v.expand(a.shape[0], -1, -1), upper=False)
            out[start : start + self.chunk] = trace_ref - c * (z * z).sum((-2, -1)).numpy()
        return out


def find_peaks(series: Any, n_std: float = 2.0) -> np.ndarray:
    """Indices of steps whose value is strictly above mean + n_std · std (population std)."""
    values = np.asarray(series, dtype=np.float64)
    if values.size == 0:
        return np.zeros(0, dtype=int)
    threshold = values.mean() + n_std * values.std()
    return np.flatnonzero(values > threshold)
