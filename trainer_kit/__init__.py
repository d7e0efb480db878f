"""The trainer kit: what every model family's job shares, copied into each job's code at submit time.

A model family is its fit function and its pyfunc (its folder: trainer/, trainers/<name>/); the kit provides
the rest (docs/trainer-contract.md, "A family through the kit"):

- params.py: the contract's command line, from the family's declared hyperparameters;
- data.py: the data asset (Date, Close), the samples and the chronological 70/15/15 split;
- contract.py: the c0..c{window-1} -> forecast input contract, the metrics, the champion on the same days,
  test_errors.json;
- family.py: `Family`, evaluate-then-refit, the MLflow run and model, metrics.json, run.json, exit codes;
- batch.py: the batch runner (one process trains a batch of tickers).

A training job's code folder is its trainer folder plus this package (`retrain.job_code.assemble_job_code`);
nothing here imports from `retrain` or from another folder of the repository, so the assembled folder runs
on its own (in Azure ML it is the command job's whole code snapshot).
"""
