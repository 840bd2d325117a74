"""Classification probes on summary vectors: weighted kNN and a linear probe, and the probe that runs both
on a dataset's train and test splits.

Both take features that were already extracted (any float dtype, converted to float32), run on the CPU
deterministically and return plain floats.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.seeds import seeded
from workbench.eval.metrics import accuracy
from workbench.eval.probes.registry import ProbeResult

if TYPE_CHECKING:
    from workbench.eval.probes.inputs import ProbeInputs


def _check_rows(x: Tensor, y: Tensor, name: str) -> None:
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(
            f"{name} features must be [N, D] and labels [N] with N > 0, "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        )


def _num_classes(*labels: Tensor) -> int:
    if min(int(y.min()) for y in labels) < 0:
        raise ValueError("class labels must be >= 0")
    return max(int(y.max()) for y in labels) + 1


def knn_classify(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    ks: Sequence[int] = (10, 20),
    temperature: float = 0.07,
    chunk_size: int = 256,
) -> dict[int, float]:
    """Weighted kNN accuracy (DINO protocol) for each k.

    Vectors are L2-normalised; the k train vectors of highest cosine similarity vote for their label
    with weight exp(similarity / temperature); the label with the largest total wins.

    Args:
        train_x, test_x: [N, D] and [M, D] features.
        train_y, test_y: [N] and [M] integer labels >= 0.
        ks: neighbour counts, each in [1, N].
        temperature: vote temperature.
        chunk_size: test rows scored at once (memory ~ chunk_size x N).

    Returns:
        {k: top-1 accuracy}.
    """
    _check_rows(train_x, train_y, "train")
    _check_rows(test_x, test_y, "test")
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train and test feature dims differ: {train_x.shape[1]} vs {test_x.shape[1]}")
    if not ks or min(ks) < 1 or max(ks) > train_x.shape[0]:
        raise ValueError(f"every k must lie in [1, {train_x.shape[0]}] (the train set size), got {ks}")
    num_classes = _num_classes(train_y, test_y)
    train = F.normalize(train_x.float(), dim=1)
    train_y = train_y.long()
    correct = dict.fromkeys(ks, 0)
    for start in range(0, test_x.shape[0], chunk_size):
        sim = F.normalize(test_x[start : start + chunk_size].float(), dim=1) @ train.T
        top_sim, top_idx = sim.topk(max(ks), dim=1)
        weights = ((top_sim - top_sim[:, :1]) / temperature).exp()  # row-wise rescaled exp(sim / T)
        one_hot = F.one_hot(train_y[top_idx], num_classes).float()
        target = test_y[start : start + chunk_size].long()
        for k in ks:
            votes = (weights[:, :k, None] * one_hot[:, :k]).sum(1)
            correct[k] += int((votes.argmax(1) == target).sum())
    return {k: c / test_x.shape[0] for k, c in correct.items()}


def linear_classify(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    steps: int = 100,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> float:
    """Top-1 test accuracy of a linear classifier on train-standardised features.

    Features are standardised with the train mean/std, then a Linear(D, C) layer is fitted full-batch
    with L-BFGS (strong Wolfe line search) on cross-entropy + weight_decay / 2 * ||W||^2, i.e.
    multinomial logistic regression; deterministic for a given seed.

    Args:
        train_x, test_x: [N, D] and [M, D] features.
        train_y, test_y: [N] and [M] integer labels >= 0.
        steps: maximum L-BFGS iterations.
        weight_decay: L2 penalty on the weights (keeps separable problems bounded).
        seed: seeds the initial weights.
    """
    _check_rows(train_x, train_y, "train")
    _check_rows(test_x, test_y, "test")
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train and test feature dims differ: {train_x.shape[1]} vs {test_x.shape[1]}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    num_classes = _num_classes(train_y, test_y)
    train = train_x.float()
    mean, std = train.mean(0), train.std(0, correction=0).clamp_min(1e-6)
    train = (train - mean) / std
    train_y = train_y.long()
    with seeded(seed):
        layer = nn.Linear(train.shape[1], num_classes)
    opt = torch.optim.LBFGS(layer.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(layer(train), train_y) + 0.5 * weight_decay * layer.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = layer((test_x.float() - mean) / std).argmax(1)
    return accuracy(pred, test_y.long())


def classification_probe(
    inputs: ProbeInputs, dataset: str, label: str, prefix: str, seed: int
) -> ProbeResult:
    """kNN (k = 10, 20; T = 0.07) and linear-probe accuracy on the summary vectors of a dataset's splits.

    Args:
        inputs: the encoder's features.
        dataset: `scenes` or `fashion` (its `<dataset>_train` and `<dataset>_test` splits; no scores where
            the train split is None, e.g. Fashion-MNIST not installed).
        label: the splits' label field.
        prefix: the scores' key prefix (`<prefix>_knn10`, `<prefix>_knn20`, `<prefix>_linear`).
        seed: seeds the linear probe.
    """
    splits = [getattr(inputs.data, f"{dataset}_{part}") for part in ("train", "test")]
    if splits[0] is None:
        return ProbeResult({})
    labels = [getattr(split, label) for split in splits]
    train, test = (inputs.features(f"{dataset}_{part}").summary for part in ("train", "test"))
    knn = knn_classify(train, labels[0], test, labels[1], ks=(10, 20), temperature=0.07)
    scores = {f"{prefix}_knn{k}": accuracy for k, accuracy in knn.items()}
    scores[f"{prefix}_linear"] = linear_classify(train, labels[0], test, labels[1], seed=seed)
    return ProbeResult(scores)
