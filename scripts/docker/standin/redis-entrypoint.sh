#!/bin/bash
# Entry point of the Redis stand-in (Debian's redis-server), as the official image's: arguments
# starting with '-' go to redis-server; redis-server runs as the redis user in /data; with no
# config file, protected mode is off (the container's network is the boundary, as there).
set -euo pipefail
if [[ $# == 0 || ${1:0:1} == - ]]; then set -- redis-server "$@"; fi
if [[ $1 == redis-server && $(id -u) == 0 ]]; then
  chown -R redis:redis /data
  exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi
if [[ $1 == redis-server && " $* " != *" --protected-mode "* ]]; then
  set -- "$@" --protected-mode no
fi
exec "$@"
