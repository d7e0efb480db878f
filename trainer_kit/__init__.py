"""The trainer kit: what every model family's job shares, copied into each job's code at submit time.

A training job's code folder is its trainer folder plus this package (`retrain.job_code.assemble_job_code`);
nothing here imports from `retrain` or from another folder of the repository, so the assembled folder runs
on its own (in Azure ML it is the command job's whole code snapshot). See docs/trainer-contract.md.
"""
