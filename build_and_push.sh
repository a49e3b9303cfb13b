#!/usr/bin/env bash
# Build the recsys image (container/Dockerfile) and push it to Amazon ECR; prints the image URI on stdout.
#
# Usage: ./build_and_push.sh [--gpu|--cpu] [--build-arg NAME=VALUE]... IMAGE_NAME [TAG]
#
#   IMAGE_NAME   ECR repository name (created when missing), e.g. recsys
#   TAG          extra tag to push (optional); the image is always tagged with the git commit and `latest`
#                (`<commit>-cpu` and `latest-cpu` for the CPU variant), a commit of a tree with uncommitted
#                changes to the image's inputs gets a `-dirty` suffix
#   --gpu        CUDA build of torch (default)      --cpu   CPU-only build (CPU instances)
#   --build-arg  passed to `docker build` (e.g. TORCH_CUDA=cu130, BASE_IMAGE=public.ecr.aws/debian/debian:bookworm-slim)
#
# Needs: the AWS CLI (v2, or v1 >= 1.17.10 for `ecr get-login-password`) with credentials, and `docker` (a Docker
# daemon, or podman's Docker API through DOCKER_HOST).
# Environment:
#   AWS_REGION / AWS_DEFAULT_REGION   region (else `aws configure get region`)
#   AWS_ENDPOINT_URL                  honored by the AWS CLI itself (tests point it at a local moto server)
#   ECR_REGISTRY_OVERRIDE             push to this registry host instead of <account>.dkr.ecr.<region>.amazonaws.com
#                                     (tests: a local registry, because moto's registry host cannot receive pushes)
#   DOCKER                            the docker CLI to use (default: docker)
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() {
  echo "build_and_push.sh: $*" >&2
  exit 1
}
log() { echo "==> $*" >&2; }

variant=gpu
build_args=()
positional=()
while (($#)); do
  case "$1" in
    --cpu) variant=cpu ;;
    --gpu) variant=gpu ;;
    --build-arg)
      (($# >= 2)) || die "--build-arg needs NAME=VALUE"
      build_args+=(--build-arg "$2")
      shift
      ;;
    --build-arg=*) build_args+=(--build-arg "${1#*=}") ;;
    -h | --help)
      usage
      exit 0
      ;;
    --)
      shift
      positional+=("$@")
      break
      ;;
    -*)
      usage >&2
      die "unknown option: $1"
      ;;
    *) positional+=("$1") ;;
  esac
  shift
done
if ((${#positional[@]} < 1 || ${#positional[@]} > 2)); then
  usage >&2
  die "expected IMAGE_NAME [TAG]"
fi
image_name=${positional[0]}
extra_tag=${positional[1]:-}
[[ "$image_name" =~ ^[a-z0-9]+([._/-][a-z0-9]+)*$ ]] || die "invalid ECR repository name: $image_name"

docker_cli=${DOCKER:-docker}
command -v aws >/dev/null || die "the AWS CLI (aws) is not on PATH"
command -v "$docker_cli" >/dev/null || die "$docker_cli is not on PATH"
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

region=${AWS_REGION:-${AWS_DEFAULT_REGION:-}}
if [[ -z "$region" ]]; then
  region=$(aws configure get region 2>/dev/null || true)
fi
[[ -n "$region" ]] || die "no AWS region: set AWS_REGION or run 'aws configure set region <region>'"

account=$(aws sts get-caller-identity --query Account --output text --region "$region") ||
  die "aws sts get-caller-identity failed: are AWS credentials configured?"
[[ "$account" =~ ^[0-9]{12}$ ]] || die "unexpected account id from STS: $account"

domain=amazonaws.com
[[ "$region" == cn-* ]] && domain=amazonaws.com.cn
registry=${ECR_REGISTRY_OVERRIDE:-${account}.dkr.ecr.${region}.${domain}}
repository="${registry}/${image_name}"

if ! aws ecr describe-repositories --region "$region" --repository-names "$image_name" >/dev/null 2>&1; then
  log "creating ECR repository $image_name in $region"
  aws ecr create-repository --region "$region" --repository-name "$image_name" \
    --image-scanning-configuration scanOnPush=true >/dev/null
fi

log "logging in to $registry"
aws ecr get-login-password --region "$region" |
  "$docker_cli" login --username AWS --password-stdin "$registry" >&2

# Tags: the commit of the image's inputs (+ -dirty when they have uncommitted changes), latest, and TAG if given.
suffix=""
[[ "$variant" == cpu ]] && suffix="-cpu"
commit=$(git -C "$repo_root" rev-parse --short=12 HEAD 2>/dev/null || echo nogit)
if [[ "$commit" != nogit ]] &&
  [[ -n "$(git -C "$repo_root" status --porcelain -- pyproject.toml setup.py container .dockerignore 2>/dev/null)" ]]; then
  commit="${commit}-dirty"
fi
tags=("${commit}${suffix}" "latest${suffix}")
[[ -n "$extra_tag" ]] && tags=("$extra_tag" "${tags[@]}")

log "building ${image_name} (${variant}) for linux/amd64"
"$docker_cli" build \
  --platform linux/amd64 \
  -f "$repo_root/container/Dockerfile" \
  --build-arg "VARIANT=${variant}" \
  ${build_args[@]+"${build_args[@]}"} \
  -t "${repository}:${tags[0]}" \
  "$repo_root" >&2

for tag in "${tags[@]}"; do
  "$docker_cli" tag "${repository}:${tags[0]}" "${repository}:${tag}"
  log "pushing ${repository}:${tag}"
  "$docker_cli" push "${repository}:${tag}" >&2
done

echo "${repository}:${tags[0]}"
