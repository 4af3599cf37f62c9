# llmfleet's own image: the gateway (`llmfleet gateway`) and the autoscaling controller (`llmfleet autoscaler`).
# The engines run the vLLM image (deploy.images.vllm); this one has no GPU code and no model.
#
#   docker build -t registry.example.com/llmfleet:0.1.0 .
#   docker run --rm -p 8080:8080 registry.example.com/llmfleet:0.1.0 gateway --host 0.0.0.0 --replica http://...
#
# Manifests from `llmfleet render k8s` run it as user 10001 with a read-only root filesystem (docs/kubernetes.md).

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# A wheel, then a virtual environment with the extras the cluster needs: the Kubernetes client, uvloop.
RUN pip wheel --no-deps -w /wheels . \
 && python -m venv /opt/llmfleet \
 && /opt/llmfleet/bin/pip install "$(ls /wheels/llmfleet-*.whl)[k8s,fast]"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="llmfleet" \
      org.opencontainers.image.description="OpenAI-compatible gateway and autoscaler for fleets of vLLM replicas" \
      org.opencontainers.image.licenses="Apache-2.0"
# Bytecode is compiled at install time; nothing is written at run time (read-only root filesystem).
ENV PATH=/opt/llmfleet/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=build /opt/llmfleet /opt/llmfleet
RUN groupadd --gid 10001 llmfleet && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin llmfleet
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["llmfleet"]
CMD ["--help"]
