#!/usr/bin/env bash
# Create the secret files monitoring/docker-compose.yml mounts under /run/secrets/, without
# overwriting any that exist: random passwords for safehold's repository and Grafana's admin,
# placeholders for Slack, PagerDuty and SMTP that you replace with your own before going live.
set -euo pipefail
cd "$(dirname "$0")"
umask 077
create() {  # create NAME VALUE
    if [ ! -e "$1" ]; then printf '%s\n' "$2" > "$1"; echo "created monitoring/secrets/$1"; fi
}
random() { head -c 24 /dev/urandom | base64 | tr -d '/+='; }
create safehold_password "$(random)"
create grafana_admin_password "$(random)"
create slack_api_url "https://hooks.slack.com/services/REPLACE/WITH/YOUR-WEBHOOK"
create pagerduty_routing_key "replace-with-your-pagerduty-events-v2-integration-key"
create smtp_password "replace-with-the-smtp-password"
