#!/usr/bin/env bash
# Set-up for the benchmark suite (bench/run.py): Debian's nginx with its mail
# module, and the few Python packages the load side and the profiler use.
#
# nginx is only installed, never started as a system service: a policy-rc.d
# that refuses every start is in place for the install, and the bench runs
# nginx itself with its own prefix, config and pid file.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY=$VENV/bin/python

if [ "$(id -u)" != 0 ]; then
    SUDO=sudo
else
    SUDO=
fi

if ! dpkg-query -W -f='${Status}\n' nginx libnginx-mod-mail 2>/dev/null | grep -c "ok installed" | grep -q 2; then
    policy=/usr/sbin/policy-rc.d
    created=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
        $SUDO chmod 755 "$policy"
        created=1
    fi
    cleanup() { if [ "$created" = 1 ]; then $SUDO rm -f "$policy"; fi; }
    trap cleanup EXIT
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends nginx libnginx-mod-mail >/dev/null
fi
# A system nginx that an install started anyway (no policy-rc.d honoured) is
# not ours to keep running on port 80; the bench never uses it.
test -x /usr/sbin/nginx
test -f /usr/lib/nginx/modules/ngx_mail_module.so

if [ ! -x "$PY" ]; then
    make venv
fi
# uvloop: a faster event loop for the load side (the bench falls back to
# asyncio's own loop without it); py-spy: sampling profiler for PROFILE.md.
$PY -m pip install --quiet --disable-pip-version-check uvloop py-spy
echo "bench set-up done: $(/usr/sbin/nginx -v 2>&1), $($PY -c 'import uvloop; print("uvloop", uvloop.__version__)')"
