#!/usr/bin/env bash
# Interactive sessions on the dev cluster: Debian's nginx (the portal's authenticating proxy in
# production and in the tests) and a JupyterLab virtualenv from PyPI that every cluster user can
# run (the dev Slurm's node is this machine). Idempotent: a second run changes nothing.
#   GPUC_JUPYTERLAB_VENV   where the venv goes (default /opt/gpucommons-sessions/jupyterlab)
set -euo pipefail

VENV="${GPUC_JUPYTERLAB_VENV:-/opt/gpucommons-sessions/jupyterlab}"
JUPYTERLAB_VERSION="${GPUC_JUPYTERLAB_VERSION:-4.*}"
PYTHON="${PYTHON:-python3}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

if ! [ -x /usr/sbin/nginx ]; then
  echo "installing nginx"
  if ! $SUDO apt-get install -y --no-install-recommends nginx-light 2>/dev/null \
      && ! $SUDO apt-get install -y --no-install-recommends nginx; then
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends nginx
  fi
  # The tests and the portal start their own nginx with their own configuration.
  $SUDO systemctl disable --now nginx 2>/dev/null || $SUDO service nginx stop 2>/dev/null || true
fi
echo "nginx: $(/usr/sbin/nginx -v 2>&1)"

if ! [ -x "$VENV/bin/jupyter-lab" ]; then
  echo "installing JupyterLab into $VENV"
  $SUDO mkdir -p "$(dirname "$VENV")"
  $SUDO "$PYTHON" -m venv "$VENV"
  $SUDO "$VENV/bin/pip" install --quiet "jupyterlab==$JUPYTERLAB_VERSION"
  # Cluster users run it: readable and executable by all, writable by none of them.
  $SUDO chmod -R a+rX "$VENV"
fi
echo "jupyterlab: $("$VENV/bin/jupyter-lab" --version) in $VENV"
