"""What runs the demo and the tests' stack, kept out of the production package ``include.gir_ops``.

The GIR simulator (per-DC RWS ops API on loopback: ``server``, ``app``, ``state``; ``python -m
include.gir_sim serve``), the demo data the DAGs read (``demo_data``), and the process-group handling
``make run`` and the engine tests start them with (``processes``). Import the pieces from their modules
so that generating demo data does not pull in the web server. It ships in the image only for the compose
demo profile; no DAG or production module imports it.
"""

from __future__ import annotations
