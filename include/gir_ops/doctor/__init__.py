"""gir_doctor: does this deployment actually work? The same checks as a DAG and as a CLI."""
