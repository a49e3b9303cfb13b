# shellcheck shell=bash
# Sourced by `make test`: make `docker` answer. On a host with a Docker daemon this does nothing; on a host with only
# the docker CLI (this workplace, CI) it provisions podman's Docker API via ../shared/tools/container-engine.sh.
# Container tests skip themselves (with the reason) when no engine can be had.
if ! docker info >/dev/null 2>&1; then
  _engine_script="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/../shared/tools/container-engine.sh"
  if [[ -x "$_engine_script" || -f "$_engine_script" ]]; then
    eval "$(bash "$_engine_script")"
  fi
  unset _engine_script
fi
