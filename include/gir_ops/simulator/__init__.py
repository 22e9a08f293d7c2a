"""A simulator of the GIR data centers: per-DC RWS ops API on loopback, and the demo data the DAGs read.

Import the pieces from their modules (``server.GirSimulator``, ``demo_data``) so that generating demo
data does not pull in the web server.
"""

from __future__ import annotations
