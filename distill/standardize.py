"""Teacher target standardisation, estimated on warm-up batches and then frozen.

`standard`: per teacher, per coordinate, separately for summary and patches: (y - mean) / std.
`phi-s` (RADIOv2.5, PHI-S): y' = H U^T (y - mean) / alpha, with U the covariance eigenvectors, H a
normalised Hadamard matrix that spreads the variance evenly over coordinates, and alpha the square
root of the mean eigenvalue, so every coordinate ends with unit variance.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from distill.atomic import atomic_path
from distill.checkpoint import contiguous_state
from distill.features import Features


def sylvester(order: int) -> Tensor:
    """Hadamard matrix of a power-of-two order."""
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < order:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)])
    return h


def is_prime(n: int) -> bool:
    return n > 1 and all(n % d for d in range(2, math.isqrt(n) + 1))


def paley(q: int) -> Tensor:
    """Hadamard matrix of order q + 1 (Paley construction I, q prime, q = 3 mod 4)."""
    residues = {(i * i) % q for i in range(1, q)}
    chi = torch.tensor([0.0] + [1.0 if i in residues else -1.0 for i in range(1, q)], dtype=torch.float64)
    jacobsthal = torch.stack([chi[(torch.arange(q) - i) % q] for i in range(q)])
    s = torch.zeros(q + 1, q + 1, dtype=torch.float64)
    s[0, 1:], s[1:, 0], s[1:, 1:] = 1, -1, jacobsthal
    return s + torch.eye(q + 1, dtype=torch.float64)


def hadamard(order: int) -> Tensor:
    """A normalised (orthogonal) Hadamard matrix of `order` = 2^k or (q + 1) 2^k with q a prime = 3 mod 4."""
    power = order & -order
    base = order // power
    for split in (1, 2, 4, 8):  # base * split = q + 1 for a Paley prime q, the rest a Sylvester factor
        m = base * split
        if split <= power and (m == 1 or (is_prime(m - 1) and (m - 1) % 4 == 3)):
            core = torch.ones(1, 1, dtype=torch.float64) if m == 1 else paley(m - 1)
            h = torch.kron(core, sylvester(power // split))
            return h / math.sqrt(order)
    raise ValueError(f"no Hadamard matrix of order {order} is constructed here; use norm.method=standard")


class MomentAccumulator:
    """Running first and second moments of feature rows, in float64."""

    def __init__(self, dim: int, full_covariance: bool) -> None:
        self.count = 0
        self.total = torch.zeros(dim, dtype=torch.float64)
        self.outer = (
            torch.zeros(dim, dim, dtype=torch.float64)
            if full_covariance
            else torch.zeros(dim, dtype=torch.float64)
        )

    def add(self, rows: Tensor) -> None:
        rows = rows.detach().to("cpu", torch.float64)
        self.count += rows.shape[0]
        self.total += rows.sum(0)
        self.outer += rows.T @ rows if self.outer.ndim == 2 else (rows * rows).sum(0)

    def mean(self) -> Tensor:
        return self.total / self.count

    def second_moment(self) -> Tensor:
        return self.outer / self.count


class Standardizer(nn.Module):
    """Frozen affine map y -> W (y - mean) for one feature kind of one teacher (W diagonal for `standard`).

    Buffers: `mean` [D] and `scale` ([D] for standard, [D, D] for phi-s).
    """

    def __init__(self, dim: int, method: str = "standard") -> None:
        super().__init__()
        if method not in ("standard", "phi-s"):
            raise ValueError(f"standardisation method must be 'standard' or 'phi-s', got '{method}'")
        self.method = method
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim) if method == "standard" else torch.eye(dim))

    def fit(self, moments: MomentAccumulator) -> None:
        """Set the frozen statistics from accumulated moments."""
        if moments.count < 2:
            raise ValueError("standardisation needs at least 2 feature rows")
        mean = moments.mean()
        if self.method == "standard":
            var = (moments.second_moment() - mean**2).clamp_min(0)
            self.scale.copy_(1 / var.add(1e-6).sqrt())
        else:
            covariance = moments.second_moment() - torch.outer(mean, mean)
            eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
            alpha = eigenvalues.clamp_min(0).mean().add(1e-6).sqrt()
            self.scale.copy_(hadamard(mean.numel()) @ eigenvectors.T / alpha)
        self.mean.copy_(mean)

    def forward(self, rows: Tensor) -> Tensor:
        """Standardise [..., D] rows."""
        centred = rows.float() - self.mean
        return centred * self.scale if self.method == "standard" else centred @ self.scale.T

    def inverse(self, rows: Tensor) -> Tensor:
        """Map standardised [..., D] rows back to the teacher's feature space."""
        if self.method == "standard":
            return rows.float() / self.scale + self.mean
        return (
            torch.linalg.solve(self.scale, rows.float().reshape(-1, rows.shape[-1]).T).T.reshape(rows.shape)
            + self.mean
        )


def patch_rows(patches: Tensor) -> Tensor:
    """[B, D, h, w] -> [B*h*w, D]."""
    return patches.permute(0, 2, 3, 1).reshape(-1, patches.shape[1])


class TeacherStandardizer(nn.Module):
    """Summary and patch standardisers of one teacher."""

    def __init__(self, summary_dim: int, patch_dim: int, method: str = "standard") -> None:
        super().__init__()
        self.summary = Standardizer(summary_dim, method)
        self.patches = Standardizer(patch_dim, method)

    def fit(self, outputs: Iterable[Features]) -> None:
        """Estimate the statistics on warm-up teacher outputs, then freeze them."""
        full = self.summary.method == "phi-s"
        summary = MomentAccumulator(self.summary.mean.numel(), full)
        patches = MomentAccumulator(self.patches.mean.numel(), full)
        for out in outputs:
            summary.add(out.summary)
            patches.add(patch_rows(out.patches))
        self.summary.fit(summary)
        self.patches.fit(patches)

    def forward(self, out: Features) -> Features:
        return self.map_features(out, self.summary.forward, self.patches.forward)

    def inverse(self, out: Features) -> Features:
        """Standardised features (e.g. an adaptor's output) back in the teacher's own space."""
        return self.map_features(out, self.summary.inverse, self.patches.inverse)

    @staticmethod
    def map_features(
        out: Features, on_summary: Callable[[Tensor], Tensor], on_rows: Callable[[Tensor], Tensor]
    ) -> Features:
        """Map the summary and every patch row of `out`."""
        b, _, h, w = out.patches.shape
        patches = on_rows(patch_rows(out.patches)).reshape(b, h, w, -1).permute(0, 3, 1, 2)
        return Features(summary=on_summary(out.summary), patches=patches)


def save_standardizers(
    standardizers: dict[str, TeacherStandardizer], path: Path, key: str | None = None
) -> None:
    """Write teachers' frozen standardisers to one safetensors file (atomically), with their method and
    the `key` of what they were fitted on (see `standardizers_key`)."""
    state = {f"{n}.{k}": v for n, s in standardizers.items() for k, v in s.state_dict().items()}
    methods = {name: s.summary.method for name, s in standardizers.items()}
    metadata = {"methods": json.dumps(methods)} | ({} if key is None else {"key": key})
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(contiguous_state(state), str(tmp), metadata=metadata)


def standardizers_key(path: Path) -> str | None:
    """The key a standardiser file was saved with; None if it has none or cannot be read."""
    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get("key")
    except (SafetensorError, OSError):
        return None


def load_standardizers(path: Path, device: str | torch.device = "cpu") -> dict[str, TeacherStandardizer]:
    """The standardisers `save_standardizers` wrote, by teacher name (frozen, in eval mode).

    Raises:
        ValueError: the file is damaged or is not a standardiser file (the message names it).
    """
    try:
        with safe_open(str(path), "pt", device=str(device)) as f:
            header = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
        methods = json.loads(header["methods"]) if "methods" in header else {}
        standardizers = {}
        # keys are <teacher>.<summary or patches>.<buffer>, and a teacher name may hold dots
        for name in sorted({key.rsplit(".", 2)[0] for key in state}):
            part = {key[len(name) + 1 :]: value for key, value in state.items() if key.startswith(f"{name}.")}
            # written before the method was recorded? a phi-s scale is a matrix, a standard one a vector
            method = methods.get(name) or ("phi-s" if part["summary.scale"].ndim == 2 else "standard")
            summary_dim, patch_dim = part["summary.mean"].numel(), part["patches.mean"].numel()
            standardizer = TeacherStandardizer(summary_dim, patch_dim, method)
            standardizer.load_state_dict(part)
            standardizers[name] = standardizer.to(device).eval()
    except (SafetensorError, OSError, KeyError, RuntimeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a readable standardiser file: {error}") from error
    return standardizers
