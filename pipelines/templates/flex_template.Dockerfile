# Dataflow Flex Template image for pipelines.batch_scoring, built on the project's image (the
# Dockerfile at the repository root), so the launcher and the workers run the same code:
#
#   docker build -t "$WORKER_IMAGE" .
#   docker build -f pipelines/templates/flex_template.Dockerfile \
#       --build-arg WORKER_IMAGE="$WORKER_IMAGE" -t "$TEMPLATE_IMAGE" .
#
# Pass the same image to the job as sdk_container_image (docs/batch_scoring.md). The
# ENTRYPOINT stays the Beam worker's boot program; Dataflow starts the launcher binary below
# itself when it launches the template.
ARG WORKER_IMAGE
FROM gcr.io/dataflow-templates-base/python311-template-launcher-base:latest AS launcher

FROM ${WORKER_IMAGE}
COPY --from=launcher /opt/google/dataflow/python_template_launcher \
    /opt/google/dataflow/python_template_launcher
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/beam_infer/pipelines/templates/batch_scoring_flex.py
