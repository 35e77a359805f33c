#!/usr/bin/env bash
# Makes ONNX Runtime's C/C++ API headers available to the build, for libqsl_onnxruntime.so (the
# custom-operator library; it needs the headers only, never libonnxruntime itself).
#   * already installed (/usr/include/onnxruntime, Debian 13's libonnxruntime-dev): nothing to do;
#   * a Debian with libonnxruntime-dev (13 and later): installs it;
#   * Debian 12: downloads that one package from the trixie suite through a private apt
#     configuration under .deps/apt (its own sources, lists and cache; nothing is added to the
#     system's sources) and unpacks only its headers into .deps/onnxruntime/include.
# Idempotent; without the network it says so and the build skips the library.
set -uo pipefail
cd "$(dirname "$0")/.."
root="$PWD/.deps"
[ -f /usr/include/onnxruntime/onnxruntime_c_api.h ] && exit 0
[ -f "$root/onnxruntime/include/onnxruntime_c_api.h" ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
if apt-cache show libonnxruntime-dev > /dev/null 2>&1; then
  echo "qsl: installing libonnxruntime-dev (ONNX Runtime's headers)"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends \
    libonnxruntime-dev && exit 0
fi

apt="$root/apt"
mkdir -p "$apt/sources" "$apt/lists/partial" "$apt/cache/archives/partial"
cat > "$apt/sources/trixie.sources" <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
: > "$apt/status"
options=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt/sources"
         -o "Dir::State::Lists=$apt/lists" -o "Dir::State::Status=$apt/status"
         -o "Dir::Cache=$apt/cache" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
echo "qsl: fetching ONNX Runtime's headers (Debian trixie's libonnxruntime-dev) into .deps/"
if ! apt-get "${options[@]}" update > "$apt/update.log" 2>&1; then
  echo "qsl: could not read the trixie package lists (see $apt/update.log);" \
       "libqsl_onnxruntime.so will not be built" >&2
  exit 0
fi
rm -f "$apt"/libonnxruntime-dev_*.deb
if ! (cd "$apt" && apt-get "${options[@]}" download libonnxruntime-dev > download.log 2>&1); then
  echo "qsl: could not download libonnxruntime-dev (see $apt/download.log);" \
       "libqsl_onnxruntime.so will not be built" >&2
  exit 0
fi
unpacked="$apt/unpacked"
rm -rf "$unpacked" && dpkg-deb -x "$apt"/libonnxruntime-dev_*.deb "$unpacked"
mkdir -p "$root/onnxruntime"
rm -rf "$root/onnxruntime/include"
cp -r "$unpacked/usr/include/onnxruntime" "$root/onnxruntime/include"
cp "$unpacked/usr/share/doc/libonnxruntime-dev/copyright" "$root/onnxruntime/copyright"
rm -rf "$unpacked"
echo "qsl: ONNX Runtime headers in .deps/onnxruntime/include ($(ls "$apt"/libonnxruntime-dev_*.deb | xargs -n1 basename))"
