#!/usr/bin/env bash
# Builds the Triton fixture image onprem-triton/tritonserver-fixture: a REAL
# tritonserver 2.51 with its Python backend (both from the nvidia-pytriton wheel
# in the virtualenv) plus the stand-in `vllm` backend of tests/fixtures/triton
# (a test double: the real vLLM engine needs a GPU and an NGC image, neither
# reachable here), and the OpenAI frontend's contract double (tests/fixtures/openai_frontend)
# where the vLLM images carry the real one. Laid out like NGC's tritonserver image so it runs the same:
#   docker run --network host -v REPO:/models onprem-triton/tritonserver-fixture \
#     tritonserver --model-repository=/models --model-control-mode=explicit --load-model=NAME
# Based on the Debian 12 systemd image (python3.11, matching the 3.11 stub).
# The tag is a hash of every input, so an unchanged fixture is reused from the
# local docker cache; it is also tagged :latest. Usage: build_triton_image.sh [PYTHON]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"
name="${TRITON_IMAGE_NAME:-onprem-triton/tritonserver-fixture}"
base="${BASE_IMAGE:-onprem-triton/debian12-systemd:latest}"
python="${1:-${repo}/.venv/bin/python}"

site="$("${python}" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
server="${site}/pytriton/tritonserver"
libs="${site}/nvidia_pytriton.libs"
[[ -x "${server}/bin/tritonserver" ]] || { echo "no tritonserver under ${server} (nvidia-pytriton missing?)" >&2; exit 1; }
base_id="$(docker image inspect --format '{{.Id}}' "${base}")"

dockerfile="$(cat <<DOCKERFILE
FROM ${base}
# libpython3.11 for the python backend stub, numpy for pb_utils; jinja2 for the OpenAI
# frontend double's chat templates (tests/fixtures/openai_frontend); nothing else.
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
      libpython3.11 python3-numpy python3-jinja2 >/dev/null \\
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/share/doc/* /usr/share/man/* \\
      /usr/lib/python3/dist-packages/numpy/*/tests /usr/lib/python3/dist-packages/numpy/tests
COPY opt/tritonserver /opt/tritonserver
ENV PATH=/opt/tritonserver/bin:\${PATH} LD_LIBRARY_PATH=/opt/tritonserver/lib
WORKDIR /opt/tritonserver
EXPOSE 8000 8001 8002
ENTRYPOINT []
CMD ["tritonserver", "--help"]
DOCKERFILE
)"

tag="$( { echo "${dockerfile}"; echo "${base_id}"; cat "${BASH_SOURCE[0]}";
          find "${repo}/tests/fixtures/triton/backends" "${repo}/tests/fixtures/openai_frontend" -type f ! -path '*__pycache__*' -print0 | sort -z | xargs -0 cat;
          sha256sum "${server}/bin/tritonserver" "${server}/backends/python/libtriton_python.so"; } \
        | sha256sum | cut -c1-12)"
image="${name}:${tag}"

# One build of an image name at a time: two at once (a scenario's prepare beside CI's images
# stage) removed each other's intermediate image ('unable to remove repository reference ...
# container ... is using its referenced image'). The second waits here, then finds it cached.
exec 9>"/tmp/$(printf '%s' "${name}" | tr -c 'A-Za-z0-9._-' '_').build.lock"
flock 9

if docker image inspect "${image}" >/dev/null 2>&1; then
  echo "triton fixture image ${image} cached"
else
  start=$(date +%s)
  context="$(mktemp -d /var/tmp/onprem-triton-fixture.XXXXXX)"
  trap 'rm -rf "${context}"' EXIT
  opt="${context}/opt/tritonserver"
  mkdir -p "${opt}/bin" "${opt}/lib" "${opt}/backends/python"
  cp "${server}/bin/tritonserver" "${opt}/bin/"
  cp "${server}/backends/python/libtriton_python.so" "${server}/backends/python/triton_python_backend_utils.py" \
     "${server}/python_backend_stubs/3.11/triton_python_backend_stub" "${opt}/backends/python/"
  # The bundled libraries, less the Python 3.13 runtime only the 3.13 stub uses.
  find "${libs}" -maxdepth 1 -type f -name '*.so*' ! -name 'libpython3-*' -exec cp {} "${opt}/lib/" \;
  (cd "${repo}/tests/fixtures/triton/backends" && find . -type f ! -path '*__pycache__*' -exec cp --parents {} "${opt}/backends/" \;)
  # Where the vLLM images carry the OpenAI frontend: its contract double (see its docstring).
  mkdir -p "${opt}/python/openai"
  (cd "${repo}/tests/fixtures/openai_frontend" && find . -type f ! -path '*__pycache__*' ! -name README.md -exec cp --parents {} "${opt}/python/openai/" \;)
  strip --strip-unneeded "${opt}"/lib/*.so* "${opt}/bin/tritonserver" 2>/dev/null || true
  echo "${dockerfile}" > "${context}/Dockerfile"
  echo "building ${image}"
  docker build --network host -q -t "${image}-layered" "${context}" >/dev/null
  # One layer: a nested dockerd on vfs (molecule gpu_host keeps it) writes every layer as a full
  # copy of the one below (three layers: 1.07 GB per host, one: 0.42 GB); docker load of the flat
  # tarball took 8.8 s where the layered one took 14.8 s on an idle machine (vfs).
  # The flat image keeps the Dockerfile's settings, read back from the layered one.
  flat_settings=()
  while IFS= read -r line; do
    [[ -n "${line}" ]] && flat_settings+=(--change "${line}")
  done < <(docker image inspect --format '{{range .Config.Env}}ENV {{.}}
{{end}}WORKDIR {{.Config.WorkingDir}}
CMD {{json .Config.Cmd}}
EXPOSE{{range $port, $_ := .Config.ExposedPorts}} {{$port}}{{end}}' "${image}-layered")
  container="$(docker create "${image}-layered")"
  docker export "${container}" | docker import "${flat_settings[@]}" - "${image}" >/dev/null
  docker rm "${container}" >/dev/null && docker rmi "${image}-layered" >/dev/null
  echo "built ${image} in $(( $(date +%s) - start ))s"
fi
docker tag "${image}" "${name}:latest"
echo "size $(docker image inspect --format '{{.Size}}' "${image}" | awk '{printf "%.0f MB", $1/1e6}')"
echo "${image}"
