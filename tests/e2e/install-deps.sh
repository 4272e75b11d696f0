#!/usr/bin/env bash
# Install the real mail software the end-to-end suite (tests/e2e) runs
# mailgate against: Dovecot (IMAP, POP3), Postfix (SMTP) and the clients curl,
# swaks (with Net::SSLeay for its TLS, only a Recommends of the package) and
# fetchmail. Debian bookworm, as root; non-interactive and
# idempotent (nothing is downloaded when everything is installed already).
#
# No service is started or configured system-wide: Postfix is preseeded with
# "No configuration", and a policy-rc.d answering 101 keeps the packages'
# maintainer scripts from starting Dovecot or Postfix while apt runs (a
# policy-rc.d that was there before is put back afterwards). The tests run
# private instances of their own from temporary directories.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

packages=(
    dovecot-core dovecot-imapd dovecot-pop3d
    postfix
    swaks libnet-ssleay-perl fetchmail curl
    openssl
)

say() { printf 'e2e install-deps: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    say "must run as root (apt-get install)" >&2
    exit 1
fi

missing=()
for pkg in "${packages[@]}"; do
    status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
    [ "$status" = installed ] || missing+=("$pkg")
done
if [ "${#missing[@]}" -eq 0 ]; then
    say "all installed: ${packages[*]}"
    exit 0
fi
say "installing: ${missing[*]}"

policy=/usr/sbin/policy-rc.d
backup=""
restore_policy() {
    if [ -n "$backup" ]; then
        mv -f "$backup" "$policy"
    else
        rm -f "$policy"
    fi
}
if [ -e "$policy" ]; then
    backup="$(mktemp /tmp/policy-rc.d.e2e-saved.XXXXXX)"
    cp -p "$policy" "$backup"
fi
trap restore_policy EXIT
trap 'exit 130' INT TERM
printf '#!/bin/sh\n# tests/e2e/install-deps.sh: start no service during this install\nexit 101\n' >"$policy"
chmod 0755 "$policy"

# Postfix: install the binaries only; no /etc/postfix/main.cf, no mail system.
printf '%s\n' \
    'postfix postfix/main_mailer_type select No configuration' \
    'postfix postfix/mailname string localhost' |
    debconf-set-selections

apt_get() {
    apt-get -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        -o APT::Install-Recommends=false -o Acquire::Retries=3 -y -q "$@"
}
# An index older than a day (or none) is refreshed first; if the install
# still fails (packages moved on the mirror), refresh once and retry.
lists=/var/lib/apt/lists
if [ -z "$(find "$lists" -maxdepth 1 -name '*_Packages*' -mmin -1440 2>/dev/null | head -n 1)" ]; then
    apt_get update
fi
if ! apt_get install "${missing[@]}"; then
    apt_get update
    apt_get install "${missing[@]}"
fi

for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Package} ${Version}\n' "$pkg"
done
