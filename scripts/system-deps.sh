#!/usr/bin/env bash
# Installs the Debian packages that the test suite starts for real, if any is missing.
# --optional: only say what is missing (the demo works without them), install nothing.
set -euo pipefail

declare -A need=(
  [/usr/lib/postgresql/15/bin/postgres]=postgresql-15
  [/usr/bin/prometheus]=prometheus
  [/usr/bin/promtool]=prometheus
  [/usr/bin/prometheus-alertmanager]=prometheus-alertmanager
  [/usr/bin/amtool]=prometheus-alertmanager
  [/usr/bin/prometheus-blackbox-exporter]=prometheus-blackbox-exporter
  [/usr/sbin/dnsmasq]=dnsmasq
  [/usr/bin/chromium]=chromium
  [/usr/sbin/haproxy]=haproxy
)
missing=()
for path in "${!need[@]}"; do
  [ -x "$path" ] || missing+=("${need[$path]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "${1:-}" = "--optional" ]; then
  echo "note: not installed (optional for the demo): ${missing[*]}; 'make system-deps' installs them"
  exit 0
fi
echo "installing Debian packages: ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -q
"${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
# Debian's packages may start services at install time; the tests start their own instances.
for svc in prometheus prometheus-alertmanager prometheus-blackbox-exporter dnsmasq postgresql \
  haproxy; do
  "${sudo_cmd[@]}" systemctl stop "$svc" >/dev/null 2>&1 || true
  "${sudo_cmd[@]}" service "$svc" stop >/dev/null 2>&1 || true
done
