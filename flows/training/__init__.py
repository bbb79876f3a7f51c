"""The training flow (flow.py, the deployments' entrypoint) and its command line (cli.py).

Nothing is imported here: `python -m flows.training` runs __main__.py, and a run without a
Prefect server must not pay for importing Prefect.
"""
