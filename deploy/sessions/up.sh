#!/usr/bin/env bash
# Interactive sessions on the dev cluster: Debian's nginx (the portal's authenticating proxy in
# production and in the tests) and a JupyterLab virtualenv from PyPI that every cluster user can
# run (the dev Slurm's node is this machine). Idempotent: a second run changes nothing.
#   GPUC_JUPYTERLAB_VENV   where the venv goes (default /opt/gpucommons-sessions/jupyterlab)
set -euo pipefail

VENV="${GPUC_JUPYTERLAB_VENV:-/opt/gpucommons-sessions/jupyterlab}"
JUPYTERLAB_VERSION="${GPUC_JUPYTERLAB_VERSION:-4.*}"
# Debian's Python: the venv must run as any cluster user (a pyenv or per-user interpreter,
# such as root's, would not be readable by them).
PYTHON=/usr/bin/python3
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

if ! "$PYTHON" -c "import ensurepip, venv" 2>/dev/null; then
  $SUDO apt-get install -y --no-install-recommends python3-venv \
    || { $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends python3-venv; }
fi

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

# A venv whose interpreter a cluster user cannot run is rebuilt.
if [ -x "$VENV/bin/jupyter-lab" ] && [ "$(readlink -f "$VENV/bin/python3")" != "$(readlink -f "$PYTHON")" ]; then
  echo "rebuilding $VENV on $PYTHON"
  $SUDO rm -rf "$VENV"
fi
if ! [ -x "$VENV/bin/jupyter-lab" ]; then
  echo "installing JupyterLab into $VENV"
  $SUDO mkdir -p "$(dirname "$VENV")"
  $SUDO "$PYTHON" -m venv "$VENV"
  $SUDO "$VENV/bin/pip" install --quiet "jupyterlab==$JUPYTERLAB_VERSION"
  # Cluster users run it: readable and executable by all, writable by none of them.
  $SUDO chmod -R a+rX "$VENV"
fi
echo "jupyterlab: $("$VENV/bin/jupyter-lab" --version) in $VENV"
