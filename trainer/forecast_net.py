"""The forecaster network (plain PyTorch): an LSTM over standardised log returns -> next return."""

from __future__ import annotations

import torch
from torch import nn


class LSTMForecaster(nn.Module):
    """(batch, steps, 1) standardised returns -> (batch,) standardised next-day return."""

    def __init__(self, hidden_size: int = 32, num_layers: int = 1) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.lstm = nn.LSTM(input_size=1, hidden_size=hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1, :]).squeeze(-1)
