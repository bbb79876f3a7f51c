"""The Dask cluster of the Docker stack (compose profile `dask`): its one-shot `dask-certs` job.

The scheduler and the workers are Dask's own `dask scheduler` / `dask worker` commands in the
platform image; their mutual TLS comes from Dask's configuration variables (nyctaxi.dasktls).
"""
