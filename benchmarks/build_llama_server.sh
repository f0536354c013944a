#!/usr/bin/env bash
# Build llama.cpp's C++ HTTP server, `llama-server`, the peer of benchmarks/serve_latency.py.
#
# Debian 12 does not package it, and the only registry reachable here is PyPI: the llama.cpp sources
# vendored in the `llama-cpp-python` source package (the version installed in the venv, so that both
# llama.cpp peers of the benchmarks run the same llama.cpp) are built with cmake and the binary is
# installed as $VENV/bin/llama-server. A second run with the same version does nothing.
#
#     benchmarks/build_llama_server.sh            # from the repository root; JOBS=2 by default
#     nice -n 15 benchmarks/build_llama_server.sh # on a machine shared with other work
#
# Needs cmake, a C++17 compiler and the `test` extra (llama-cpp-python) installed in the venv.
# Environment: VENV (default .venv), JOBS (default 2), CACHE (default ~/.cache/codekiln/llama-server).
# The build is static (one self-contained binary), CPU only, tuned to this CPU (GGML_NATIVE), without
# the web UI (its prebuilt assets would be downloaded from Hugging Face) and without HTTPS.
set -euo pipefail

VENV=${VENV:-.venv}
JOBS=${JOBS:-2}
CACHE=${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/codekiln/llama-server}
PY="$VENV/bin/python"
BIN="$VENV/bin/llama-server"

[ -x "$PY" ] || { echo "error: no Python at $PY (run make install first, or set VENV)" >&2; exit 1; }
command -v cmake >/dev/null || { echo "error: cmake is not installed (Debian: apt-get install -y cmake)" >&2; exit 1; }
command -v c++ >/dev/null || { echo "error: no C++ compiler (Debian: apt-get install -y g++)" >&2; exit 1; }
VERSION=$("$PY" -c 'import importlib.metadata as m; print(m.version("llama_cpp_python"))' 2>/dev/null) \
  || { echo "error: llama-cpp-python is not installed in $VENV (pip install -e '.[test]')" >&2; exit 1; }

STAMP="$VENV/.llama-server-$VERSION"
if [ -x "$BIN" ] && [ -f "$STAMP" ]; then
  echo "llama-server $VERSION already built: $BIN"
  exit 0
fi

SRC="$CACHE/$VERSION"
mkdir -p "$SRC"
SDIST="$SRC/llama_cpp_python-$VERSION.tar.gz"
if [ ! -f "$SDIST" ]; then
  echo "downloading the llama-cpp-python $VERSION source package"
  "$PY" -m pip download -q --no-deps --no-binary :all: --no-build-isolation "llama-cpp-python==$VERSION" -d "$SRC.tmp" \
    || "$PY" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$SRC.tmp"
  mv "$SRC.tmp"/llama_cpp_python-"$VERSION".tar.gz "$SDIST"
  rm -rf "$SRC.tmp"
fi
LLAMA="$SRC/llama_cpp_python-$VERSION/vendor/llama.cpp"
if [ ! -f "$LLAMA/CMakeLists.txt" ]; then
  tar -xzf "$SDIST" -C "$SRC"
fi

# Flags checked against this llama.cpp: LLAMA_CURL is gone (deprecated, ignored; HTTPS is LLAMA_OPENSSL),
# the server is tools/server (LLAMA_BUILD_TOOLS + LLAMA_BUILD_SERVER), and its web UI is fetched from a
# Hugging Face bucket unless LLAMA_USE_PREBUILT_UI=OFF (then it is an empty table: the API still works).
cmake -S "$LLAMA" -B "$SRC/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DGGML_NATIVE=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF \
  >"$SRC/cmake-configure.log" \
  || { echo "error: cmake configure failed; see $SRC/cmake-configure.log" >&2; exit 1; }
cmake --build "$SRC/build" --target llama-server -j "$JOBS"
install -m 755 "$SRC/build/bin/llama-server" "$BIN"
"$BIN" --version 2>&1 | head -n 2
touch "$STAMP"
echo "installed $BIN (llama.cpp from llama-cpp-python $VERSION)"
