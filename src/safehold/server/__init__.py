"""server layer: the control plane's HTTP face (``safehold serve``).

Concepts: the FastAPI application (``app.create_app``) with open probes
(``/healthz``, ``/readyz``) and ``/metrics`` (``metrics.SafeholdCollector``,
computed from the catalog at scrape time), the token-protected REST API under
``/api/v1`` (``routes``; bodies in ``schemas``), bearer-token auth with the
roles viewer < operator < admin (``auth``; tokens in
``safehold.catalog.tokens``), and ``serve.serve`` running it all under uvicorn
with the scheduler in-process. No job logic lives here: routes call
``safehold.engine``.
"""
