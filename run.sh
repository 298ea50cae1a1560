#!/usr/bin/env bash
# Run Orb in Docker the way the cluster does: image lunaricorn/orb, port
# 8001 on the host, data, blobs and logs in host directories.
#
#   ./run.sh            (re)start the container, building the image if missing
#
# Settings come from the environment, then from .native_env (or the file
# named by ORB_ENV_FILE); each configuration variable that is set is passed
# into the container. ORB_DATA_DIR, ORB_STORAGE_DIR and ORB_LOG_DIR name
# the host directories mounted at the container's fixed paths.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$root"

image=${ORB_IMAGE:-lunaricorn/orb:latest}
name=${ORB_CONTAINER_NAME:-lunaricorn-orb}
host_port=8001
container_uid=10001

variables=(
  ORB_WORKERS ORB_THREADS ORB_GRACEFUL_TIMEOUT
  CLUSTER_LEADER_URL LEADER_RETRY_INTERVAL LEADER_HEARTBEAT_INTERVAL
  ORB_LEADER_REQUIRED ORB_LEADER_TIMEOUT ORB_LEADER_WAIT_TIMEOUT
  ORB_NODE_TYPE ORB_NODE_KEY ORB_NODE_HOST
  SIGNALING_HOST SIGNALING_PUSH_PORT ORB_SIGNALING_TIMEOUT_MS
  ORB_SIGNALING_MAX_ATTEMPTS ORB_EVENT_RETENTION_DAYS
  db_type db_host db_port db_user db_password db_name db_schema DATABASE_URL
  ORB_LOG_LEVEL ORB_LOG_FORMAT ORB_LOG_MAX_BYTES ORB_LOG_BACKUPS
  ORB_MAX_UPLOAD_BYTES ORB_API_TOKENS
)

# Read KEY=VALUE lines; a variable already in the environment wins.
read_env_file() {
  local file=$1 line key value
  while IFS= read -r line || [ -n "$line" ]; do
    line=${line%$'\r'}
    line=${line#"${line%%[![:space:]]*}"}
    case $line in '' | '#'*) continue ;; esac
    line=${line#export }
    key=${line%%=*}
    value=${line#*=}
    key=${key%"${key##*[![:space:]]}"}
    if [[ ! $key =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || [ "$key" = "$line" ]; then
      echo "run.sh: $file: ignoring line: $line" >&2
      continue
    fi
    case $value in
      \"*\") value=${value:1:${#value}-2} ;;
      \'*\') value=${value:1:${#value}-2} ;;
    esac
    if [ -z "${!key+set}" ]; then
      export "$key=$value"
    fi
  done <"$file"
}

env_file=${ORB_ENV_FILE-$root/.native_env}
if [ -n "$env_file" ] && [ -f "$env_file" ]; then
  read_env_file "$env_file"
fi

data_dir=${ORB_DATA_DIR:-$root/tmp/data}
storage_dir=${ORB_STORAGE_DIR:-$root/tmp/file_storage}
log_dir=${ORB_LOG_DIR:-$root/logs}
mkdir -p "$data_dir" "$storage_dir" "$log_dir"
data_dir=$(cd "$data_dir" && pwd)
storage_dir=$(cd "$storage_dir" && pwd)
log_dir=$(cd "$log_dir" && pwd)

if docker container inspect "$name" >/dev/null 2>&1; then
  echo "run.sh: removing the existing container $name" >&2
  docker rm -f "$name" >/dev/null
fi

if ! docker image inspect "$image" >/dev/null 2>&1; then
  echo "run.sh: building $image" >&2
  docker build -t "$image" "$root"
fi

# The container's user must be able to write to the mounted directories:
# run as the caller, or, when the caller is root, hand them to the image's
# own unprivileged user.
user_args=()
if [ "$(id -u)" -eq 0 ]; then
  chown "$container_uid:$container_uid" "$data_dir" "$storage_dir" "$log_dir"
else
  user_args=(--user "$(id -u):$(id -g)")
fi

# docker stop waits this long before SIGKILL: the grace period and a margin.
grace=${ORB_GRACEFUL_TIMEOUT:-30}
if [[ ! $grace =~ ^[0-9]{1,6}$ ]]; then
  grace=30
fi
stop_timeout=$((10#$grace + 10))

env_args=()
for variable in "${variables[@]}"; do
  if [ -n "${!variable+set}" ]; then
    env_args+=(-e "$variable=${!variable}")
  fi
done

docker run -d \
  --name "$name" \
  --restart unless-stopped \
  --stop-timeout "$stop_timeout" \
  -p "$host_port:8080" \
  -v "$data_dir:/opt/lunaricorn/orb/data" \
  -v "$storage_dir:/opt/lunaricorn/orb/file_storage" \
  -v "$log_dir:/opt/lunaricorn/orb_data/logs" \
  "${user_args[@]}" \
  "${env_args[@]}" \
  "$image" >/dev/null

echo "Orb is running in container $name: http://localhost:$host_port"
