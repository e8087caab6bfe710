# Runtime image for `hailo-immich serve`.
#
# HailoRT is not on PyPI: put Hailo's wheel (hailort-4.23.0-cp311-cp311-linux_x86_64.whl or the
# aarch64 one, from the Hailo Developer Zone) in ./hailort/ before building to get the hailo backend.
# Its version must equal the host's hailo_pci driver version, or start-up fails with
# HAILO_INVALID_DRIVER_VERSION. Without a wheel the image runs the CPU backend and says so.
#
#   docker build -t hailo-immich .
#   docker run --device /dev/hailo0 -p 3003:3003 -v hailo-immich-models:/models hailo-immich
#
# (Not built in CI: the CI machine has no Docker engine.)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HAILO_IMMICH_MODELS_DIR=/models \
    IMMICH_HOST=[::] \
    IMMICH_PORT=3003

WORKDIR /app
COPY pyproject.toml README.md CHANGELOG.md ./
COPY hailo_immich_cli ./hailo_immich_cli
COPY recipes ./recipes
COPY hailort/ /tmp/hailort/
RUN pip install --no-cache-dir . \
 && if ls /tmp/hailort/*.whl >/dev/null 2>&1; then pip install --no-cache-dir /tmp/hailort/*.whl; fi \
 && rm -rf /tmp/hailort

VOLUME ["/models"]
EXPOSE 3003
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import os,urllib.request; urllib.request.urlopen(f'http://localhost:{os.environ.get(\"IMMICH_PORT\",\"3003\")}/ping', timeout=2)"
CMD ["sh", "-c", "hailo-immich fetch-models && exec hailo-immich serve"]
