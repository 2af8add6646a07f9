"""Integrations of fb with other frameworks, one module each.

- `fb.integrations.dask`: `FbSpillBuffer`, a Dask worker's data mapping whose task results
  live in an `fb.FBPool` that spills to local disk or S3 (needs the ``dask`` extra).

Nothing is imported here: each integration imports its framework only when it is imported.
"""

__all__: list[str] = []
