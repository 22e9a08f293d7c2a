# gir-ops image: the official Airflow 3.3.2 image + this project's runtime requirements and code.
#
# Built as Airflow's "extending the image" guidance asks (docs: docker-stack, "Building the image"):
#   - as the `airflow` user, `pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" ...`, so pip
#     can never up- or downgrade the Airflow the image came with;
#   - `--constraint "${HOME}/constraints.txt"`: the constraints file the base image itself was built with
#     (present in the official images since 2.9.0), so every package Airflow already has keeps the version
#     Airflow 3.3.2 was released and tested with. Not our constraints.txt: that is a freeze of the
#     developers' venv, and its versions may differ from the image's (pip check would then fail).
#   - requirements.txt holds runtime packages only (no test, lint or `make run` package), with floors for
#     anything those constraints pin (see its header); `pip check` fails the build on any inconsistency.
# tests/deploy/test_image.py runs this install step as a dry run (no Docker needed).
#
# The -python3.11 tag: the tests run on Python 3.11, so the image runs the same minor version.
FROM apache/airflow:3.3.2-python3.11

# The demo data volume's mount point, owned like the rest of the image (airflow user, group 0,
# group-writable, setgid) so a fresh named volume is writable for any AIRFLOW_UID run with GID 0.
USER root
RUN mkdir -p /var/lib/gir && chown airflow:0 /var/lib/gir && chmod 2775 /var/lib/gir

USER airflow
COPY --chown=airflow:0 requirements.txt /opt/gir-ops/requirements.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /opt/gir-ops/requirements.txt \
        --constraint "${HOME}/constraints.txt" \
    && pip check

# The code is baked in so the image runs on its own (a worker on another host, a Kubernetes pod);
# docker-compose.yaml mounts the same folders read-only on top for a checkout-driven deployment.
# include/ holds the production package include/gir_ops and, for the compose demo profile only, the
# simulator include/gir_sim. The example topology (include/config/) is not in the image (.dockerignore):
# a deployment names its own with GIR_TOPOLOGY, and forgetting it fails at start instead of running
# against the demo's data centers.
COPY --chown=airflow:0 include/ /opt/airflow/include/
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/

# `include.gir_ops` and `include.gir_sim` importable as in an Astro project. No GIR_TOPOLOGY default.
ENV PYTHONPATH=/opt/airflow \
    GIR_DATA_DIR=/var/lib/gir
