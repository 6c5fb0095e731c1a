"""The weight classifier of the paper (Eq. 8-9): standardize -> linear projection -> softmax.

Fitted as L2-regularized multinomial logistic regression, solved to its optimum:

    min_W  sum_i CE(z_i W + b, y_i) + (l2 / 2) ||W||^2          (l2 = 1: scikit-learn's C = 1)

The objective is strictly convex in W, so its minimizer is unique and (representer theorem) lies in
the row space of the standardized training features Z (N x D): W = V R with V (D x r) an
orthonormal basis of that space and r <= N. We therefore solve for R (r x C) with L-BFGS on the
reduced features Z V: the same optimum as in the full space, at a cost set by the number of
training nets instead of the feature size (D reaches 10^5-10^6 for raw layers).

Everything needs only inner products of standardized features: with the Gram Z Z^T = U S^2 U^T,
V = Z^T U S^-1, so the reduced training features are Z V = U S, and a net x reduces to
z(x) V = (z(x) Z^T) U S^-1. ``gram_reduction`` gives both from Grams alone, which is how HTT runs
on zoos whose features do not fit in memory (htt/gram.py streams the Grams).

``n_heads`` independent heads share the input and are fitted together with the objective summed
over heads: head 0 learns the true task labels, the others seeded shuffles of them, which gives the
label-permutation null in the same fit.
"""

from __future__ import annotations

import contextlib

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightsim.quiet import quiet_lightning
from weightsim.trainer import TrainerConfig, silent_trainer


def gram_reduction(gram: Tensor, rtol: float = 1e-6) -> tuple[Tensor, Tensor]:
    """From the N x N Gram Z Z^T = U S^2 U^T of the standardized training features: the map
    P = U S^-1 (N, r) that takes a net's inner products with them, z(x) Z^T (1, N), to its reduced
    coordinates z(x) V, and the training nets' own reduced coordinates U S (N, r). Directions with
    S^2 < rtol * max are dropped. float64 throughout."""
    evals, u = torch.linalg.eigh(gram.double())
    keep = evals > rtol * evals.max().clamp_min(1e-300)
    u, s = u[:, keep], evals[keep].sqrt()
    return u / s, u * s


class WeightClassifier(L.LightningModule):
    """x: (N, D) chain features -> logits (H, N, C); the logits are the weight representation.

    Fitted on reduced coordinates (N, r) (``head``). With features: mean, std (D,) standardization
    fitted on the training nets and basis (D, r) = Z^T U S^-1 (``fit_classifier``); the projection of head
    h is W_h = basis @ weight[h] (D x C), plus bias[h]. Without (``fit_reduced``), ``head`` takes
    reduced coordinates that the caller computed from Grams.
    """

    def __init__(self, rank: int, num_classes: int, n_heads: int = 1, l2: float = 1.0, max_iter: int = 500,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        # not to the logger: the run's config is the composed config, never one fit's settings
        self.save_hyperparameters(ignore=["dtype"], logger=False)
        for name in ("mean", "std", "basis"):  # set by fit_classifier, for scoring features directly
            self.register_buffer(name, None)
        self.weight = nn.Parameter(torch.zeros(n_heads, rank, num_classes, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(n_heads, 1, num_classes, dtype=dtype))

    def reduce(self, x: Tensor) -> Tensor:
        """(N, D) features -> (N, r) coordinates of the standardized features in the basis."""
        return ((x - self.mean) / self.std) @ self.basis  # z V

    def head(self, r: Tensor) -> Tensor:
        return torch.einsum("nr,hrc->hnc", r, self.weight) + self.bias  # z W_h + b_h, W_h = V R_h

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.reduce(x))

    def objective(self, r: Tensor, y: Tensor) -> Tensor:
        """Summed over heads: sum_i CE + (l2/2) ||W_h||^2 (||W_h|| = ||R_h||: V is orthonormal)."""
        logits = self.head(r)
        ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
        return ce + 0.5 * self.hparams.l2 * self.weight.pow(2).sum()

    def training_step(self, batch, _batch_idx):
        r, y = batch  # (N, r) reduced training features, (H, N) labels per head
        loss = self.objective(r, y)
        self.final_objective = float(loss.detach()) / y.numel()  # per net and head, at L-BFGS's last evaluation
        return loss

    def configure_optimizers(self):
        return torch.optim.LBFGS(self.parameters(), lr=1.0, max_iter=self.hparams.max_iter, history_size=20,
                                 tolerance_grad=1e-7, tolerance_change=1e-10, line_search_fn="strong_wolfe")


class _FullBatch(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return 1

    def __getitem__(self, _):
        return self.x, self.y


def standardization(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-feature mean and std of the training features; constant features get std 1 (z = 0)."""
    return x.mean(0), constant_to_one(x.std(0))


def constant_to_one(std: Tensor) -> Tensor:
    """Per-feature std with the constant features' (std ~ 0 relative to the largest) set to 1."""
    return torch.where(std > 1e-12 * std.max().clamp_min(1e-30), std, torch.ones_like(std))


def fit_classifier(x: Tensor, labels: Tensor, num_classes: int, n_null: int = 0, seed: int = 0,
                   l2: float = 1.0, max_iter: int = 500, accelerator: str = "cpu") -> WeightClassifier:
    """Fit head 0 on ``labels`` and ``n_null`` heads on seeded shuffles of them.

    x: (N, D) float training features; labels: (N,) int64 in [0, num_classes).
    """
    mean, std = standardization(x)
    z = (x - mean) / std
    proj, reduced = gram_reduction(z.double() @ z.double().T)
    model = fit_reduced(reduced.to(x.dtype), labels, num_classes, n_null, seed, l2, max_iter, accelerator)
    model.register_buffer("mean", mean)
    model.register_buffer("std", std)
    model.register_buffer("basis", (z.double().T @ proj).to(x.dtype))  # V = Z^T U S^-1
    return model


def fit_reduced(reduced: Tensor, labels: Tensor, num_classes: int, n_null: int = 0, seed: int = 0,
                l2: float = 1.0, max_iter: int = 500, accelerator: str = "cpu",
                tc: TrainerConfig | None = None) -> WeightClassifier:
    """Fit on the training nets' reduced coordinates (N, r) (``gram_reduction``): head 0 on
    ``labels``, ``n_null`` heads on seeded shuffles of them, in a Trainer with the flags of ``tc``
    (default: TrainerConfig()'s). The model's ``head`` then scores reduced coordinates (M, r) of any
    nets; ``final_objective`` is the fit's objective per net and head at its end (recorded in
    run.json, not logged: a fit is one point, not a curve)."""
    g = torch.Generator().manual_seed(seed)
    ys = torch.stack([labels] + [labels[torch.randperm(len(labels), generator=g)] for _ in range(n_null)])
    model = WeightClassifier(reduced.shape[1], num_classes, 1 + n_null, l2, max_iter, reduced.dtype)
    loader = torch.utils.data.DataLoader(_FullBatch(reduced.detach(), ys), batch_size=None)
    with one_thread(), quiet_lightning():  # no "GPU available", tips or "Trainer.fit stopped" per fit
        trainer = silent_trainer(tc, max_epochs=1, accelerator=accelerator, logger=False, log_every_n_steps=1)
        trainer.fit(model, loader)
    return model.eval().cpu()


@contextlib.contextmanager
def one_thread():
    """Run torch on one CPU thread: the fit and the protocols are many small ops (vectors of the
    training nets' size), where more threads only add synchronization, and on a busy machine an
    intra-op thread that waits for a core stalls every op (10x slower measured on 2 shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
