"""The batch-scoring flow (flow.py, the deployment's entrypoint) and its command line (cli.py).

Nothing is imported here: `python -m flows.batch` runs __main__.py, and a run without a Prefect
server must not pay for importing Prefect.
"""
