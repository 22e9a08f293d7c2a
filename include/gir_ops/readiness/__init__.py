"""The DR readiness page: can the standby DC take over now? (plugin ``plugins/gir_readiness.py``)."""
