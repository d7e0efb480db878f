"""LightningModule: the LSTM forecaster trained with MSE on standardised next-day returns."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from forecast_net import LSTMForecaster
from torch import nn


class LSTMForecasterModule(L.LightningModule):
    def __init__(self, hidden_size: int = 32, num_layers: int = 1, learning_rate: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = LSTMForecaster(hidden_size=hidden_size, num_layers=num_layers)
        self.loss = nn.MSELoss()
        self.learning_rate = learning_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", self.loss(self.net(x), y), on_step=False, on_epoch=True, batch_size=len(y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.learning_rate)


class EpochRecorder(L.Callback):
    """Records per-epoch losses, reports them, and keeps the weights of the best validation epoch."""

    def __init__(self, on_epoch: Callable[[int, float, float], None] | None = None) -> None:
        self.on_epoch = on_epoch
        self.history: list[dict[str, float]] = []
        self.best_val_loss = math.inf
        self.best_state: dict[str, Any] | None = None
        self.best_epoch: int | None = None  # 0-based epoch of best_state

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Validation runs inside the training epoch, so both losses are known here.
        metrics = trainer.callback_metrics
        train_loss = float(metrics["train_loss"])
        val_loss = float(metrics["val_loss"])
        epoch = int(trainer.current_epoch)
        self.history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
        if val_loss < self.best_val_loss:
            self.best_val_loss = val_loss
            self.best_state = copy.deepcopy(pl_module.net.state_dict())
            self.best_epoch = epoch
        if self.on_epoch is not None:
            self.on_epoch(epoch, train_loss, val_loss)
