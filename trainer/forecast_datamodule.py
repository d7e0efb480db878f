"""LightningDataModule over the prepared return windows (train shuffled within itself, seeded)."""

from __future__ import annotations

import lightning as L
import torch
from forecast_data import PreparedData
from torch.utils.data import DataLoader, TensorDataset


class ReturnWindowsDataModule(L.LightningDataModule):
    def __init__(self, data: PreparedData, batch_size: int = 64, seed: int = 42) -> None:
        super().__init__()
        self.data = data
        self.batch_size = batch_size
        self.seed = seed

    def dataset(self, part: str) -> TensorDataset:
        s = self.data.part(part)
        x = torch.as_tensor(self.data.x[s], dtype=torch.float32).unsqueeze(-1)
        y = torch.as_tensor(self.data.y[s], dtype=torch.float32)
        return TensorDataset(x, y)

    def train_dataloader(self) -> DataLoader:
        # Shuffling happens inside the training part only; the generator makes the order repeatable.
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.dataset("train"), batch_size=self.batch_size, shuffle=True, generator=generator
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("val"), batch_size=max(self.batch_size, 256))

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("test"), batch_size=max(self.batch_size, 256))
