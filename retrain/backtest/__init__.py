"""The policy backtest (`retrain backtest`): which retraining policy to run, measured on history.

Replays each ticker day by day with data as known that day and applies each policy (never, weekly,
monthly, drift, performance, monitor) with the live system's own code: the trainer folder's in-process
fit, the gate, the monitor's detectors, thresholds and cooldown. Reports the served forecasts' error
against the naive forecast (with intervals against `never`) and what each policy cost in trainings.

- `engine`: the replay (`replay_ticker`, `Replay`, `BacktestSettings`, `POLICIES`);
- `fitting`: a repository trainer fitted in-process (`InProcessTrainer`);
- `report`: statistics, the table, the CSV and the PNG;
- the CLI command: `retrain/cli/backtest.py`.
"""
