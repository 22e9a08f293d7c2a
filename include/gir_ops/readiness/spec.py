"""Names the readiness page, its plugin and its tests share; imports nothing heavy.

The page reads what the other features recorded in Airflow's metadata (their Asset events, the return
values of their tasks, their runs and Human-in-the-loop requests), never their logs.
"""

from __future__ import annotations

# Where the FastAPI app is mounted in the API server, and the route of its entry in the UI navigation.
URL_PREFIX = "/gir-readiness"
NAV_NAME = "GIR readiness"
NAV_ROUTE = "gir-readiness"

# Re-index coverage looks back this far (whole UTC hours up to the end of the DC's last schedule period).
COVERAGE_DAYS = 30
# A live RWS answer is reused this long, so refreshing the page does not hammer RWS.
RWS_CACHE_SECONDS = 30.0
# One RWS GET may take this long (connect, read); one try only: the page must answer fast.
RWS_TIMEOUT = (2.0, 3.0)

# Where the failover's approval waits, in the UI (relative to the Airflow base URL).
REQUIRED_ACTIONS_PATH = "required_actions?response_received=false"
