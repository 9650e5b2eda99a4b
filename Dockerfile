# GPU worker image for Dataflow (custom container) and any portable runner that starts
# DOCKER environments. Build and push, then run a job with
#   --sdk_container_image=REGION-docker.pkg.dev/PROJECT/REPO/beam-infer-gpu:TAG
#   --dataflow_service_options="worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver"
#   --experiments=use_runner_v2
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/beam-infer-gpu:TAG .
#
# The Beam SDK image keeps Python, Beam and the worker boot program exactly what the job
# is submitted with (both must match the launcher: Python 3.11, apache-beam 2.77).
# TensorFlow's "and-cuda" extra brings the CUDA and cuDNN libraries as wheels; the NVIDIA
# driver comes from the host (Dataflow's install-nvidia-driver).
ARG BEAM_VERSION=2.77.0
FROM apache/beam_python3.11_sdk:${BEAM_VERSION}

# beam_infer turns memory growth on itself before loading; this covers any other TF use
# in the same process, so several SDK processes can share one GPU.
ENV TF_FORCE_GPU_ALLOW_GROWTH=true \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/beam_infer
COPY requirements.txt setup.py README.md LICENSE ./
RUN pip install -r requirements.txt "tensorflow[and-cuda]>=2.21,<2.22"
# The library only: the jobs in pipelines/ are launched from a checkout and their code
# comes to the workers pickled by value (docs/packaging.md), so the image needs no
# top-level "pipelines" package.
COPY beam_infer ./beam_infer
COPY beam_infer_cli.py ./
RUN pip install --no-deps . \
    && python -c "import beam_infer, tensorflow as tf; print(beam_infer.__version__, tf.__version__)"

ENTRYPOINT ["/opt/apache/beam/boot"]
