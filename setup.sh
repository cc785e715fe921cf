#!/usr/bin/env bash
# Set up this checkout: the real Fashion-MNIST (Debian's package, where apt-get is usable) and a
# virtual environment in .venv with the project and its test tools. Safe to run again: it only
# does what is missing.
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages: the real Fashion-MNIST, a C++ compiler for the fused kernels (mlp/fused.py;
# without one, runs fall back to TensorFlow's ops), and PostgreSQL for the search tests.
data=/usr/share/datasets/fashion-mnist
packages=()
if [ -z "${FASHION_MNIST_DIR:-}" ] && [ ! -f "$data/t10k-labels-idx1-ubyte.gz" ]; then
  packages+=(dataset-fashion-mnist)
fi
if ! command -v "${CXX:-g++}" >/dev/null; then
  packages+=(g++)
fi
# PostgreSQL's server binaries: the search tests start a throwaway cluster (tests/test_search.py).
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  packages+=(postgresql)
fi
if [ ${#packages[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${packages[*]} with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
  elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then
    echo "setup: installing ${packages[*]} with sudo apt-get"
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
  else
    echo "setup: no apt-get for ${packages[*]}; the experiments will look in the cache or download the data, use TensorFlow's ops without a C++ compiler, and the PostgreSQL test is skipped" >&2
  fi
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$python" -m venv .venv
fi
# constraints.txt pins the exact versions the tests passed with, so a set-up next month gets the
# same TensorFlow and the same numerics. Refresh it deliberately (docs/extending.md, "Newer
# dependencies").
# pytest stays at 9.1: 9.2 no longer lets pytest-xdist mark a test's group in its id, so
# --dist loadgroup would spread the tests that share a trained run (tests/conftest.py) again.
stamp=.venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "setup: installing the project and its test tools into .venv (versions from constraints.txt)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[test]"
  touch "$stamp"
fi
