#!/usr/bin/env bash
# Install what kpimon needs outside Python when it is missing: Java 17+ and Maven (for the local Kafka),
# promtool (Debian's prometheus package: checks and unit-tests the Prometheus rules) and amtool
# (prometheus-alertmanager: checks the Alertmanager config; the end-to-end test runs the server), and tmux.
# `system-deps.sh demo`: only what `make run` (the demo) needs, Java and Maven.
# Uses Debian's packages; on other systems it says what to install and stops.
set -euo pipefail

mode=${1:-all}
need=()
java_ok() {
  command -v java >/dev/null 2>&1 || return 1
  local v
  v=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)
  [ -n "$v" ] && [ "$v" -ge 17 ]
}
java_ok || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
if [ "$mode" != demo ]; then
  command -v promtool >/dev/null 2>&1 || need+=(prometheus)
  # Alertmanager and amtool: `make lint` checks deploy/alertmanager/, the end-to-end test routes real alerts.
  { command -v amtool >/dev/null 2>&1 && command -v prometheus-alertmanager >/dev/null 2>&1; } \
    || need+=(prometheus-alertmanager)
  command -v tmux >/dev/null 2>&1 || need+=(tmux)  # the tests drive `kpimon top` in a terminal
fi

[ ${#need[@]} -eq 0 ] && exit 0

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  echo "installing ${need[*]} (Debian packages)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
elif [ "$mode" = demo ]; then
  echo "the demo needs Java 17+ (to run the local Kafka) and, once, Maven (to fetch Kafka's jars):" \
    "missing here: ${need[*]} (Debian package names)." \
    "Install them and retry: macOS \`brew install openjdk@17 maven\`," \
    "Fedora \`dnf install java-17-openjdk-headless maven\`, Debian/Ubuntu as root \`apt-get install ${need[*]}\`." >&2
  exit 1
else
  echo "kpimon needs: ${need[*]} (Java 17+ and Maven run the local Kafka; prometheus provides promtool and the server the end-to-end tests scrape with; prometheus-alertmanager provides amtool and the Alertmanager the end-to-end test notifies through; tmux drives the terminal view in tests)." \
    "Install them and retry." >&2
  exit 1
fi
