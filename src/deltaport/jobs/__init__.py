"""Patch builds as jobs in a PostgreSQL-backed task queue (procrastinate).

On PostgreSQL with ``builds = "workers"`` (config.toml, or ``DELTAPORT_BUILDS``),
``deltaport deploy`` plans the deployment, enqueues one ``build_patch`` job per
distinct layer patch it needs and returns at once with the deployment ``building``.
``deltaport worker`` processes, anywhere with the database, the bundle store and the
cloud registry, build the patches into the shared patch cache (``patches/`` in the
bundle store: a folder or S3); the job finishing the last patch of a deployment
enqueues ``assemble_deployment``, which runs the ordinary deploy pipeline with every
patch a cache hit and records the set under the id the operator was given.

- :mod:`deltaport.jobs.identity` — which layer patches a bundle needs (pure).
- :mod:`deltaport.jobs.patches` — build one layer patch; the shared patch cache.
- :mod:`deltaport.jobs.app` — the procrastinate App, its schema, its tasks.
- :mod:`deltaport.jobs.queue` — enqueue a deployment's builds, record progress.

On the embedded default (SQLite) nothing of this runs: deploy builds in-process.
See docs/workers.md.
"""
