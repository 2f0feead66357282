#!/usr/bin/env bash
# One-shot, idempotent set-up of everything the suite and its tests need on a fresh Debian/Ubuntu
# machine (CI runs it as root on a clean checkout). Installs into the active Python environment.
#
#   bash scripts/setup.sh          # or: make setup
#
# 1. System packages: the TTS engines and voices the offline mini-benchmark builder runs (flite,
#    festival); its other Debian sources are only downloaded and unpacked, never installed.
# 2. torch==2.14.1 + torchaudio==2.11.0 first, so no later dependency can pull another torch build.
# 3. This package with its test extras (s3prl 0.4.18, pysdtw, ray and submitit for the executor tests, ...).
# 4. hear-validator 2021.0.6: it declares Python < 3.9 and needs TensorFlow, so TensorFlow is
#    installed on its own and the validator with --no-deps --ignore-requires-python. The suite never
#    imports TensorFlow in its own process (see upstreams/s3prl_compat.py); tests run the validator
#    as a subprocess.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts chromium chromium-driver)
PY=${PYTHON:-python3}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# The builder fetches its other sound sources with `apt-get download`, which needs package lists.
no_lists=0
ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 || no_lists=1
if ((${#missing[@]})) || ((no_lists)); then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "setup: need root for 'apt-get update && apt-get install -y ${missing[*]}'" >&2; exit 1
  fi
  echo "setup: apt-get update${missing:+ and install ${missing[*]}}"
  $SUDO apt-get update -qq
  if ((${#missing[@]})); then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

pip_install() { "$PY" -m pip install -q --disable-pip-version-check "$@"; }

if ! "$PY" -c "import torch, torchaudio, sys; sys.exit(not (torch.__version__.startswith('2.14.1') and torchaudio.__version__.startswith('2.11.0')))" 2>/dev/null; then
  echo "setup: installing torch==2.14.1 torchaudio==2.11.0"
  pip_install torch==2.14.1 torchaudio==2.11.0
fi

echo "setup: installing the suite (editable) with test extras"
pip_install -e ".[test]" torch==2.14.1 torchaudio==2.11.0

if ! "$PY" -c "import tensorflow" 2>/dev/null; then
  echo "setup: installing tensorflow-cpu for hear-validator"
  pip_install tensorflow-cpu torch==2.14.1
fi
if ! command -v hear-validator >/dev/null; then
  pip_install --no-deps --ignore-requires-python hearvalidator==2021.0.6
fi
# hearbaseline 2021.1.1 (a third-party HEAR module the tests run as `hear:hearbaseline.naive`) pins
# numpy==1.19.2 / numba==0.48 and pulls TensorFlow: install it alone; librosa comes with the test extras.
if ! "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('hearbaseline') != '2021.1.1')" 2>/dev/null; then
  pip_install --no-deps hearbaseline==2021.1.1
fi
"$PY" -c "import torch; assert torch.__version__.startswith('2.14.1'), torch.__version__"
echo "setup: done"
