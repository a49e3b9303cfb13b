#!/usr/bin/env bash
# Debian packages the project needs on the host (not in the image): nginx for `serve`, Java 17 for Spark,
# wrk for the serving benchmark. Installs only what is missing; needs root (or sudo) the first time.
set -euo pipefail
need=()
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v wrk >/dev/null || need+=(wrk)
((${#need[@]})) || exit 0
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
echo "system-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
