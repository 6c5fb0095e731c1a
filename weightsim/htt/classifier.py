"""The weight classifier of the paper (Eq. 8-9): standardize -> linear projection -> softmax.

``n_heads`` independent linear heads share the standardized input and are trained together, each
on its own label vector, with the loss summed over heads: head 0 learns the true task labels, the
other heads learn shuffled labels and give the label-permutation null in the same fit.
"""

from __future__ import annotations

import warnings

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class WeightClassifier(L.LightningModule):
    """x: (N, D) chain features -> logits (H, N, C). The logits are the weight representation."""

    def __init__(self, in_dim: int, num_classes: int, n_heads: int = 1, lr: float = 0.01,
                 weight_decay: float = 1e-3, epochs: int = 300, tag: str = "classifier"):
        super().__init__()
        self.save_hyperparameters()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.weight = nn.Parameter(torch.randn(n_heads, in_dim, num_classes) / in_dim ** 0.5)
        self.bias = nn.Parameter(torch.zeros(n_heads, 1, num_classes))

    def standardize_with(self, x: Tensor) -> None:
        """Fit the feature standardization on the training split only."""
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp_min(1e-8 * x.std(0).max().clamp_min(1e-30)))

    def forward(self, x: Tensor) -> Tensor:
        z = (x - self.mean) / self.std  # (N, D)
        return torch.einsum("nd,hdc->hnc", z, self.weight) + self.bias  # z W_h + b_h

    def training_step(self, batch, _batch_idx):
        x, y = batch  # (N, D), (H, N)
        logits = self(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(y).mean(1)
        self.log(f"{self.hparams.tag}/train_loss", loss[0])
        if len(loss) > 1:
            self.log(f"{self.hparams.tag}/null_train_loss", loss[1:].mean())
        return loss.sum()

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


class _FullBatch(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return 1

    def __getitem__(self, _):
        return self.x, self.y


def fit_classifier(x: Tensor, labels: Tensor, num_classes: int, n_null: int = 0, seed: int = 0,
                   lr: float = 0.01, weight_decay: float = 1e-3, epochs: int = 300,
                   accelerator: str = "cpu", logger=None, tag: str = "classifier") -> WeightClassifier:
    """Train head 0 on ``labels`` and ``n_null`` heads on seeded shuffles of them (full batch).

    x: (N, D) float; labels: (N,) int64 in [0, num_classes).
    """
    g = torch.Generator().manual_seed(seed)
    ys = [labels] + [labels[torch.randperm(len(labels), generator=g)] for _ in range(n_null)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WeightClassifier(x.shape[1], num_classes, 1 + n_null, lr, weight_decay, epochs, tag)
    model.standardize_with(x)
    trainer = L.Trainer(max_epochs=epochs, accelerator=accelerator, devices=1, logger=logger or False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        log_every_n_steps=max(1, epochs // 20), num_sanity_val_steps=0)
    loader = torch.utils.data.DataLoader(_FullBatch(x, torch.stack(ys)), batch_size=None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer.fit(model, loader)
    return model.eval().cpu()
