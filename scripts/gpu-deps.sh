#!/usr/bin/env bash
# Prepares what scripts/gpu-check.sh needs on a GPU machine that has no package registry, on a machine
# that has the Debian packages (scripts/setup.sh installs them):
#   .gpudeps/  headers and libraries of stb_image, cJSON, iniparser, PCRE2, libunistring, zlib and libzip
#              (the GPU image lacks them; PCRE2, libunistring and zlib as static libraries; libzip, which
#              Debian ships only shared, as libzip.so with its soname: it needs libbz2.so.1.0 and
#              libcrypto.so.3 at run time, and gpu-check.sh uses it only where the image has both)
#   .whl/      diffusers (+ importlib_metadata) wheels for the PyTorch side of the benchmark
# Both folders are git-ignored; pass them to the device tool as carry: [".gpudeps", ".whl"].
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpudeps && mkdir -p .gpudeps/include .gpudeps/lib
cp -r /usr/include/stb /usr/include/cjson /usr/include/iniparser .gpudeps/include/
cp -L /usr/lib/x86_64-linux-gnu/libcjson.so .gpudeps/lib/libcjson.so
cp -L /usr/lib/x86_64-linux-gnu/libcjson.so .gpudeps/lib/libcjson.so.1   # the soname the binaries ask for
cp -L /usr/lib/x86_64-linux-gnu/libiniparser.a .gpudeps/lib/libiniparser.a
cp /usr/include/pcre2.h /usr/include/unistr.h /usr/include/uninorm.h /usr/include/unicase.h /usr/include/unictype.h \
   /usr/include/unitypes.h /usr/include/zlib.h /usr/include/zconf.h .gpudeps/include/
cp -r /usr/include/unistring .gpudeps/include/
cp -L /usr/lib/x86_64-linux-gnu/libpcre2-8.a /usr/lib/x86_64-linux-gnu/libunistring.a \
      /usr/lib/x86_64-linux-gnu/libz.a .gpudeps/lib/
cp /usr/include/zip.h /usr/include/zipconf.h .gpudeps/include/
cp -L /usr/lib/x86_64-linux-gnu/libzip.so .gpudeps/lib/libzip.so
cp -L /usr/lib/x86_64-linux-gnu/libzip.so .gpudeps/lib/libzip.so.4   # the soname the binaries ask for
rm -rf .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl diffusers importlib_metadata
du -sh .gpudeps .whl
