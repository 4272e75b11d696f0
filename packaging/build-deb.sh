#!/usr/bin/env bash
# Build the mailgate Debian package from this checkout.
#
#   packaging/build-deb.sh [OUTPUT_DIR]     (default: packaging/dist)
#
# The Debian packaging lives in packaging/debian; dpkg-buildpackage wants it
# at the root of the source tree, so the checkout (as it is on disk, without
# virtualenvs, caches and build output) is copied to a temporary directory
# with debian/ at its root, built there with "dpkg-buildpackage -us -uc -b",
# and mailgate_*.deb (with the .changes and .buildinfo) lands in OUTPUT_DIR.
#
# Needs: dpkg-dev debhelper dh-python pybuild-plugin-pyproject python3-all
# python3-setuptools, and for the unit tests run during the build
# python3-pytest python3-pytest-timeout python3-gevent python3-requests
# python3-yaml python3-setproctitle (DEB_BUILD_OPTIONS=nocheck skips them).
set -euo pipefail

# Debian's own python3 and tools, whatever else (pyenv, a virtualenv) is first
# on PATH: pybuild runs "python3.11" and must get Debian's interpreter.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
unset VIRTUAL_ENV PYTHONPATH PYTHONHOME

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
out="${1:-$here/dist}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

# The Debian version is the pyproject version plus a Debian revision.
upstream="$(/usr/bin/python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$root/pyproject.toml")"
debian_version="$(dpkg-parsechangelog -l "$here/debian/changelog" -S Version)"
if [ "${debian_version%-*}" != "$upstream" ]; then
    echo "build-deb: pyproject.toml says version $upstream but packaging/debian/changelog says $debian_version;" >&2
    echo "build-deb: add a changelog entry, e.g.: dch -c packaging/debian/changelog -v $upstream-1 'New upstream release.'" >&2
    exit 1
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/mailgate-deb.XXXXXX")"
trap 'rm -rf "$work"' EXIT
src="$work/mailgate-$upstream"
mkdir "$src"

tar -C "$root" -cf - \
    --exclude=./.git --exclude=./.venv --exclude=./venv --exclude=./.ci \
    --exclude=./packaging --exclude=./run --exclude=./var \
    --exclude=./build --exclude=./dist --exclude=./.pybuild \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude='*.pyc' \
    --exclude=.pytest_cache --exclude=.mypy_cache --exclude=.ruff_cache \
    . | tar -C "$src" -xf -
cp -a "$here/debian" "$src/debian"

echo "build-deb: building mailgate $debian_version in $src"
(cd "$src" && dpkg-buildpackage -us -uc -b)

shopt -s nullglob
built=("$work"/mailgate_"$debian_version"_*.deb)
if [ "${#built[@]}" -eq 0 ]; then
    echo "build-deb: dpkg-buildpackage produced no mailgate_*.deb" >&2
    exit 1
fi
cp "$work"/mailgate_"$debian_version"_*.deb "$work"/mailgate_"$debian_version"_*.changes \
    "$work"/mailgate_"$debian_version"_*.buildinfo "$out"/
for deb in "${built[@]}"; do
    echo "build-deb: $out/$(basename "$deb")"
done
