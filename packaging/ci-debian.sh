#!/usr/bin/env bash
# CI for the Debian package. Run as root on a fresh Debian bookworm machine:
#
#   packaging/ci-debian.sh
#
# It installs the build dependencies, builds mailgate_*.deb from this checkout
# (packaging/build-deb.sh), checks it with lintian and the systemd unit with
# systemd-analyze, installs it with apt (dependencies from Debian), then runs
# the installed command the way the unit does (systemd itself need not run):
# ExecStartPre and ExecStart under the unit's capability bounding set and
# no_new_privs, a POP3 login through it to a fake auth server and a fake POP3
# backend from tests/fakes, workers running as user mailgate, ExecReload,
# the shipped logrotate file, ExecStop; finally it purges the package and
# checks that nothing is left behind.
#
# Environment: DEB_BUILD_OPTIONS is passed on to the build (nocheck skips the
# unit tests run during the build); CI_DEBIAN_SKIP_APT=1 skips "apt-get
# update/install" of the tools (when they are installed already).
set -euo pipefail

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
unset VIRTUAL_ENV PYTHONPATH PYTHONHOME
export DEBIAN_FRONTEND=noninteractive
export PYTHONDONTWRITEBYTECODE=1
export LC_ALL=C.UTF-8

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
started=$(date +%s)
conf=/etc/mailgate/mailgate.yaml
unit=/lib/systemd/system/mailgate.service
pidfile=/run/mailgate/mailgate.pid
log=/var/log/mailgate/error.log
python=/usr/bin/python3

step() { printf '\n=== [%3ds] %s ===\n' "$(($(date +%s) - started))" "$*"; }
say() { printf 'ci-debian: %s\n' "$*"; }
fail() { printf 'ci-debian: FAILED: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "run me as root"
# shellcheck disable=SC1091
if [ "$(. /etc/os-release && echo "${VERSION_CODENAME:-}")" != bookworm ]; then
    say "warning: this is not Debian bookworm; carrying on"
fi

work="$(mktemp -d /tmp/mailgate-ci.XXXXXX)"
chmod 0755 "$work"
bg_pids=()
user_existed=no
getent passwd mailgate >/dev/null && user_existed=yes

master_pid() { if [ -s "$pidfile" ]; then cat "$pidfile" 2>/dev/null || true; fi; }

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    local pid
    pid="$(master_pid)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        say "cleanup: fast stop of mailgate master $pid"
        kill -TERM "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    fi
    for pid in "${bg_pids[@]}"; do
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [ "$rc" -ne 0 ]; then
        if [ -r "$log" ]; then
            echo "--- last lines of $log ---"
            tail -n 40 "$log"
        fi
        for f in "$work"/*.out; do
            [ -e "$f" ] && { echo "--- $f ---"; tail -n 20 "$f"; }
        done
    fi
    if dpkg-query -W -f='${Status}' mailgate 2>/dev/null | grep -q 'ok installed\|config-files'; then
        say "cleanup: purging mailgate"
        apt-get purge -y -q mailgate >/dev/null 2>&1
    fi
    if [ "$user_existed" = no ] && getent passwd mailgate >/dev/null; then
        # The package keeps its system user on purge, as Debian does; this
        # script created it, so it removes it.
        deluser --quiet --system mailgate >/dev/null 2>&1
        getent group mailgate >/dev/null && delgroup --quiet --system mailgate >/dev/null 2>&1
    fi
    rm -rf /run/mailgate "$work"
    # man(1) caches the page it formatted for systemd-analyze verify.
    rm -f /var/cache/man/cat8/mailgate.8.gz
    printf '\n=== [%3ds] %s ===\n' "$(($(date +%s) - started))" \
        "$([ "$rc" -eq 0 ] && echo "ci-debian: all checks passed" || echo "ci-debian: FAILED (exit $rc)")"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for SECONDS DESCRIPTION COMMAND...: until COMMAND succeeds.
wait_for() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$(($(date +%s) + seconds))
    until "$@"; do
        [ "$(date +%s)" -lt "$deadline" ] || fail "timed out after ${seconds}s waiting for $what"
        sleep 0.1
    done
}

# ---------------------------------------------------------------------------
step "Install the build and test tools"
if [ "${CI_DEBIAN_SKIP_APT:-}" = 1 ]; then
    say "CI_DEBIAN_SKIP_APT=1: not running apt-get"
else
    apt-get update -q
    # Build-Depends of packaging/debian/control (the python3-* libraries and
    # pytest are for the unit tests run during the build), then lintian,
    # systemd (systemd-analyze), logrotate, procps (ps) and strace for the checks.
    apt-get install -y -q --no-install-recommends \
        dpkg-dev debhelper dh-python pybuild-plugin-pyproject \
        python3-all python3-setuptools \
        python3-pytest python3-pytest-timeout python3-trustme \
        python3-gevent python3-requests python3-yaml python3-setproctitle \
        lintian systemd logrotate procps strace
fi
for pkg in python3-gevent python3-requests python3-yaml python3-setproctitle; do
    say "$(dpkg-query -W -f='${Package} ${Version}' "$pkg")"
done

if dpkg-query -W -f='${Status}' mailgate 2>/dev/null | grep -q 'ok installed\|config-files'; then
    say "mailgate is installed from an earlier run: purging it first"
    pid="$(master_pid)"
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && sleep 2
    apt-get purge -y -q mailgate
fi

# ---------------------------------------------------------------------------
step "Build the package (packaging/build-deb.sh)"
"$here/build-deb.sh" "$work/out"
debs=("$work"/out/mailgate_*_all.deb)
[ -f "${debs[0]}" ] || fail "no mailgate_*_all.deb was built"
deb="${debs[0]}"
dpkg-deb --info "$deb"
dpkg-deb --contents "$deb" | grep -v '/dist-packages/mailgate/.*\.py$'

# ---------------------------------------------------------------------------
step "lintian (fails on errors)"
lintian --fail-on error --display-info --show-overrides "$work"/out/mailgate_*.changes
say "lintian: no errors"

# ---------------------------------------------------------------------------
step "Install the package with apt (dependencies from Debian)"
apt-get install -y -q "$deb"
dpkg-query -W -f='${Package} ${Version} ${Status}\n' mailgate

check_owner() { # PATH OWNER:GROUP MODE
    local got
    got="$(stat -c '%U:%G %a' "$1")"
    [ "$got" = "$2 $3" ] || fail "$1 is $got, expected $2 $3"
    say "$1: $got"
}
[ -x /usr/bin/mailgate ] || fail "/usr/bin/mailgate is missing"
/usr/bin/mailgate --version
getent passwd mailgate | grep -q ':/var/lib/mailgate:/usr/sbin/nologin$' \
    || fail "user mailgate: $(getent passwd mailgate)"
say "user: $(getent passwd mailgate); $(id mailgate)"
check_owner /etc/mailgate/users.yaml root:mailgate 640
check_owner /var/log/mailgate root:adm 755
check_owner "$log" mailgate:adm 640
dpkg-query -W -f='${Conffiles}\n' mailgate | grep -q " $conf " || fail "$conf is not a conffile"
dpkg-query -W -f='${Conffiles}\n' mailgate
[ -f /usr/share/man/man8/mailgate.8.gz ] || say "note: no man page installed (path excluded by dpkg?)"

step "The shipped configuration passes 'mailgate test'"
/usr/bin/mailgate -c "$conf" test
set +e
/usr/bin/mailgate -c "$conf" status
status=$?
set -e
[ "$status" -eq 3 ] || fail "'mailgate status' exited $status when not running, expected 3"

# ---------------------------------------------------------------------------
step "systemd-analyze verify $unit"
# Works offline, without systemd running: it loads the unit and the units it
# names, checks the directives and that the Exec*= binaries exist, and (with
# --man=yes, its default) that man:mailgate(8) from Documentation= resolves.
man_flag=--man=yes
if ! command -v man >/dev/null || [ ! -f /usr/share/man/man8/mailgate.8.gz ]; then
    man_flag=--man=no
fi
verify_out="$(systemd-analyze verify "$man_flag" "$unit" 2>&1)" || {
    echo "$verify_out"
    fail "systemd-analyze verify failed"
}
[ -z "$verify_out" ] || echo "$verify_out"
if grep -q 'mailgate' <<<"$verify_out"; then
    fail "systemd-analyze verify complained about mailgate.service"
fi
say "systemd-analyze verify $man_flag: no complaints"
systemd-analyze security --offline=yes --no-pager "$unit" 2>/dev/null | tail -n 1 || true

# ---------------------------------------------------------------------------
step "Start the fake POP3 backend and auth server (tests/fakes, $python)"
# read_port FILE PATTERN: the port the fake printed on its first line.
read_port() {
    local file=$1 pattern=$2 line
    wait_for 15 "$file" grep -q "$pattern" "$file"
    line="$(grep -m1 "$pattern" "$file")"
    sed -E 's/.*127\.0\.0\.1:([0-9]+).*/\1/' <<<"$line"
}
(cd "$root" && exec "$python" -m tests.fakes.pop3_backend --port 0 \
    --user alice:wonderland --user bob:builder) >"$work/pop3_backend.out" 2>&1 &
bg_pids+=($!)
backend_port="$(read_port "$work/pop3_backend.out" 'POP3 backend on')"
(cd "$root" && exec "$python" -m tests.fakes.auth_server --port 0 \
    --backend "127.0.0.1:$backend_port" --user alice:wonderland --user bob:builder) \
    >"$work/auth_server.out" 2>&1 &
bg_pids+=($!)
auth_port="$(read_port "$work/auth_server.out" '^auth_http ')"
say "POP3 backend on 127.0.0.1:$backend_port, auth_http 127.0.0.1:$auth_port/auth"

# ---------------------------------------------------------------------------
step "Configuration for the test, derived from the shipped one"
testconf="$work/mailgate.yaml"
listen_port=110
if ! "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 110))' 2>/dev/null; then
    listen_port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    say "note: 127.0.0.1:110 is in use here; listening on $listen_port instead"
fi
sed -e "s|^  auth_file: users.yaml\$|  auth_http: 127.0.0.1:$auth_port/auth|" \
    -e "s|^    - listen: 127.0.0.1:110\$|    - listen: 127.0.0.1:$listen_port|" \
    "$conf" >"$testconf"
grep -q "^  auth_http: 127.0.0.1:$auth_port/auth\$" "$testconf" || fail "could not set auth_http in $testconf"
grep -q "^    - listen: 127.0.0.1:$listen_port\$" "$testconf" || fail "could not set listen in $testconf"
diff -u "$conf" "$testconf" || true

# ---------------------------------------------------------------------------
step "Read the unit's commands and sandbox"
unit_value() { sed -n "s/^$1=//p" "$unit" | tail -n 1; }
caps="$(unit_value CapabilityBoundingSet)"
nnp="$(unit_value NoNewPrivileges)"
[ -n "$caps" ] || fail "the unit sets no CapabilityBoundingSet"
bounding="-all"
for cap in $caps; do
    cap="${cap#CAP_}"
    bounding="$bounding,+${cap,,}"
done
setpriv_args=(--bounding-set="$bounding")
[ "$nnp" = yes ] && setpriv_args+=(--no-new-privs)
nofile="$(unit_value LimitNOFILE)"
limits=()
if [ -n "$nofile" ]; then
    if ! prlimit --nofile="$nofile:$nofile" true 2>/dev/null; then
        # systemd (PID 1) may raise the hard limit; this container may not.
        say "note: cannot raise the open files limit to $nofile here; using the hard limit $(ulimit -Hn)"
        nofile="$(ulimit -Hn)"
    fi
    limits=(prlimit --nofile="$nofile:$nofile")
fi
for key in ExecStartPre ExecStart ExecReload ExecStop; do
    say "$key=$(unit_value "$key")"
done
say "as: ${limits[*]} setpriv ${setpriv_args[*]} (CapabilityBoundingSet=$caps, NoNewPrivileges=$nnp, LimitNOFILE=$nofile)"

# SystemCallFilter= cannot be tried without systemd: instead every command
# of the unit runs under strace, and the system calls that mailgate made
# (master and workers, from start to stop) are checked against the filter.
trace=no
if command -v strace >/dev/null && strace -f -qq -o /dev/null true 2>/dev/null; then
    trace=yes
else
    say "note: strace cannot trace here; SystemCallFilter= will not be checked"
fi

# unit_exec KEY: run the unit's KEY= command line the way systemd would
# (from /, a clean environment, the unit's bounding set and no_new_privs),
# with the test configuration in place of the shipped one. ExecStart goes on
# being traced in the background until the master exits.
unit_exec() {
    local key=$1 line words cmd
    line="$(unit_value "$key")"
    [ -n "$line" ] || fail "the unit has no $key="
    line="${line#[-@+!:]}"
    line="${line//"$conf"/"$testconf"}"
    read -ra words <<<"$line"
    say "$key: ${words[*]}"
    cmd=("${limits[@]}" setpriv "${setpriv_args[@]}" "${words[@]}")
    if [ "$trace" = yes ]; then
        # The command's exit code is written to a file, since strace -f
        # returns only when the daemon it started has exited too.
        # shellcheck disable=SC2016
        cmd=(strace -f -qq -c -o "$work/strace.$key" sh -c '"$@"; echo $? >"$0"' "$work/rc.$key" "${cmd[@]}")
    fi
    rm -f "$work/rc.$key"
    (cd / && exec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 "${cmd[@]}") &
    local pid=$!
    if [ "$trace" = yes ]; then
        if [ "$key" = ExecStart ]; then
            start_tracer=$pid
            bg_pids+=("$pid")
        fi
        wait_for 120 "$key to return" sh -c "test -s '$work/rc.$key' || ! kill -0 $pid 2>/dev/null"
        [ -s "$work/rc.$key" ] || fail "$key: strace ended without the command's exit code"
        [ "$key" = ExecStart ] || wait "$pid"
        return "$(cat "$work/rc.$key")"
    fi
    wait "$pid"
}

# exited PID: the process is gone, or a zombie waiting to be reaped.
exited() {
    local stat
    stat="$(ps -o stat= -p "$1" 2>/dev/null | tr -d ' ')"
    [ -z "$stat" ] || [ "${stat#Z}" != "$stat" ]
}

# workers: the pids of the master's children, one a line.
workers() { ps -o pid= --ppid "$1" | tr -d ' ' | sort -n; }
oneline() { tr '\n' ' ' <<<"$1"; }
worker_users() { ps -o user= --ppid "$1" | tr -d ' ' | sort -u | tr '\n' ' '; }

# pop3_login USER PASSWORD: a whole POP3 session through mailgate.
pop3_login() {
    "$python" - "$listen_port" "$1" "$2" <<'EOF'
import poplib, sys
port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
pop = poplib.POP3("127.0.0.1", port, timeout=15)
print("greeting:", pop.getwelcome().decode())
pop.user(user)
print("PASS:", pop.pass_(password).decode())
count, size = pop.stat()
print("STAT:", count, size)
assert count >= 1, "the backend's mailbox should not look empty"
print("QUIT:", pop.quit().decode())
EOF
}

# ---------------------------------------------------------------------------
step "ExecStartPre (configuration test) and ExecStart, as root"
# RuntimeDirectory=mailgate: systemd creates /run/mailgate before starting.
install -d -m 0755 /run/mailgate
unit_exec ExecStartPre || fail "ExecStartPre failed"
unit_exec ExecStart || fail "ExecStart failed"
master="$(master_pid)"
if [ -z "$master" ] || ! kill -0 "$master"; then
    fail "no running master after ExecStart (pid file $pidfile)"
fi
/usr/bin/mailgate -c "$testconf" status
ps -o user=,pid=,ppid=,args= -p "$master"
[ "$(ps -o user= -p "$master" | tr -d ' ')" = root ] || fail "the master does not run as root"
grep '^CapBnd' "/proc/$master/status"
grep '^Max open files' "/proc/$master/limits"
wait_for 15 "workers of master $master" test -n "$(workers "$master")"
ps -o user=,pid=,ppid=,args= --ppid "$master"
[ "$(worker_users "$master")" = "mailgate " ] || fail "workers run as: $(worker_users "$master")"
say "the workers run as user mailgate"

step "A POP3 login through mailgate (alice)"
pop3_login alice wonderland
wait_for 10 "alice's session in $log" grep -q 'login="alice".*outcome=proxied' "$log"
grep 'alice' "$log"

# ---------------------------------------------------------------------------
step "ExecReload (mailgate reload): new workers"
old_workers="$(workers "$master")"
unit_exec ExecReload || fail "ExecReload failed"
new_generation() {
    local now
    now="$(workers "$master")"
    [ -n "$now" ] && [ -z "$(comm -12 <(echo "$old_workers") <(echo "$now"))" ]
}
wait_for 20 "the old workers ($(oneline "$old_workers")) to be replaced" new_generation
kill -0 "$master" || fail "the master is gone after the reload"
[ "$(master_pid)" = "$master" ] || fail "the pid file changed on reload"
say "workers before: $(oneline "$old_workers"); after: $(oneline "$(workers "$master")")"
[ "$(worker_users "$master")" = "mailgate " ] || fail "new workers run as: $(worker_users "$master")"
grep -q 'signal 1 (SIGHUP) received' "$log" || fail "no SIGHUP line in $log"
pop3_login alice wonderland

# ---------------------------------------------------------------------------
step "logrotate -f /etc/logrotate.d/mailgate: the log is reopened (USR1)"
cat /etc/logrotate.d/mailgate
logrotate -f -s "$work/logrotate.state" /etc/logrotate.d/mailgate
ls -l /var/log/mailgate
[ -s "$log.1" ] || fail "$log.1 was not made"
[ -f "$log" ] || fail "no new $log after rotation"
check_owner "$log" mailgate:adm 640
grep -q 'signal 10 (SIGUSR1) received' "$log.1" || fail "the master did not get USR1 from postrotate"
pop3_login bob builder
wait_for 10 "bob's session in the new $log" grep -q 'login: "bob"' "$log"
if grep -q 'login: "bob"' "$log.1"; then
    fail "bob's session went to the rotated file $log.1"
fi
grep 'bob' "$log"
say "the new session is in the new file: the workers reopened the log"

# ---------------------------------------------------------------------------
step "ExecStop (graceful, bounded)"
stop_workers="$(workers "$master")"
unit_exec ExecStop || fail "ExecStop failed"
if [ "$trace" = yes ]; then
    wait_for 30 "strace of ExecStart to end" exited "$start_tracer"
    wait "$start_tracer" || true
fi
# A zombie has exited: under an init that does not reap (some containers) the
# daemonized master stays one, and `mailgate stop` counts it as gone too.
! kill -0 "$master" 2>/dev/null || [ "$(ps -o stat= -p "$master" | tr -d ' ')" = Z ] \
    || fail "master $master still runs after ExecStop"
for pid in $stop_workers; do
    ! kill -0 "$pid" 2>/dev/null || [ "$(ps -o stat= -p "$pid" | tr -d ' ')" = Z ] \
        || fail "worker $pid still runs after ExecStop"
done
[ ! -e "$pidfile" ] || fail "$pidfile is left behind"
set +e
/usr/bin/mailgate -c "$testconf" status
status=$?
set -e
[ "$status" -eq 3 ] || fail "'mailgate status' exited $status after the stop, expected 3"
grep -q 'exit$' "$log" || fail "no exit line in $log"
tail -n 5 "$log"

if [ "$trace" = yes ]; then
    step "System calls made against the unit's SystemCallFilter=$(unit_value SystemCallFilter)"
    systemd-analyze syscall-filter --no-pager >"$work/syscall-groups.txt" 2>/dev/null
    "$python" - "$(unit_value SystemCallFilter)" "$work/syscall-groups.txt" "$work"/strace.Exec* <<'EOF'
import re
import sys

spec, groups_file, traces = sys.argv[1], sys.argv[2], sys.argv[3:]
groups, current = {}, None
for line in open(groups_file, encoding="utf-8"):
    if re.fullmatch(r"@[\w-]+", line.strip()) and not line.startswith(" "):
        current = groups.setdefault(line.strip(), [])
    elif current is not None and line.strip() and not line.strip().startswith("#"):
        current.append(line.split()[0])


def expand(names):
    out = set()
    for name in names:
        out |= expand(groups.get(name, ())) if name.startswith("@") else {name}
    return out


deny = spec.startswith("~")
listed = expand(spec.lstrip("~").split())
used = {}
for trace in traces:
    for line in open(trace, encoding="utf-8"):
        fields = line.split()
        if len(fields) >= 5 and fields[0][0].isdigit() and fields[-1] != "total":
            used.setdefault(fields[-1], []).append(trace.rsplit(".", 1)[-1])
bad = sorted(n for n in used if (n in listed) == deny)
print(f"{len(used)} distinct system calls made; the filter allows {'all but ' if deny else ''}{len(listed)}")
print(" ".join(sorted(used)))
if bad:
    for name in bad:
        print(f"not allowed by SystemCallFilter={spec}: {name} (in {', '.join(sorted(set(used[name])))})")
    sys.exit(1)
EOF
    say "every system call made is allowed by the filter"
fi

step "logrotate while mailgate is stopped (the postrotate guard)"
logrotate -f -s "$work/logrotate.state" /etc/logrotate.d/mailgate
say "logrotate exited 0"
rm -rf /run/mailgate  # RuntimeDirectory= is removed when the unit stops

# ---------------------------------------------------------------------------
step "apt-get purge mailgate: nothing is left behind"
apt-get purge -y -q mailgate
if dpkg-query -W -f='${Status}' mailgate 2>/dev/null | grep -q 'installed\|config-files'; then
    fail "dpkg still knows mailgate: $(dpkg-query -W -f='${Status}' mailgate)"
fi
left=()
for path in /usr/bin/mailgate /etc/mailgate /var/log/mailgate /var/lib/mailgate /run/mailgate \
    "$unit" /etc/systemd/system/multi-user.target.wants/mailgate.service \
    /etc/logrotate.d/mailgate /usr/lib/python3/dist-packages/mailgate \
    /usr/share/man/man8/mailgate.8.gz /usr/share/doc/mailgate; do
    [ ! -e "$path" ] && [ ! -L "$path" ] || left+=("$path")
done
[ "${#left[@]}" -eq 0 ] || fail "left behind after purge: ${left[*]}"
say "all files are gone"
if getent passwd mailgate >/dev/null; then
    say "the system user mailgate stays after purge, as Debian policy has it"
fi
