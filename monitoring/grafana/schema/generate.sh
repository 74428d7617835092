#!/usr/bin/env bash
# Regenerate the JSON schemas that tests/monitoring/test_dashboards.py validates dashboards/*.json
# against, from Grafana's published TypeScript types (npm @grafana/schema) with npm
# ts-json-schema-generator. The output is committed so that CI needs no npm; run this after
# changing GRAFANA_VERSION (and the Grafana image in monitoring/docker-compose.yml, and the
# grafana-foundation-sdk pin in pyproject.toml: a test keeps the three in step).
#   bash monitoring/grafana/schema/generate.sh      # needs node + npm (Debian: apt-get install npm)
set -euo pipefail
cd "$(dirname "$0")"

GRAFANA_VERSION=11.6.9
GENERATOR_VERSION=2.4.0     # the newest that runs on Node 18/20; 2.5+ needs Node 22
PANELS=(stat timeseries table bargauge gauge)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
npm install --silent --no-save --no-audit --no-fund --prefix "$work" \
    "@grafana/schema@$GRAFANA_VERSION" "ts-json-schema-generator@$GENERATOR_VERSION" >/dev/null
raw="$work/node_modules/@grafana/schema/dist/esm/raw"
generate() {  # generate FILE.d.ts TYPE OUTPUT
    "$work/node_modules/.bin/ts-json-schema-generator" --path "$1" --type "$2" --no-type-check --out "$3"
}

rm -rf panels; mkdir -p panels
generate "$raw/dashboard/x/dashboard_types.gen.d.ts" Dashboard dashboard.schema.json
for panel in "${PANELS[@]}"; do
    file=$(ls "$raw/composable/$panel/panelcfg/x/"*_types.gen.d.ts)
    generate "$file" Options "panels/$panel.options.schema.json"
    if grep -q '^export interface FieldConfig' "$file"; then
        generate "$file" FieldConfig "panels/$panel.fieldconfig.schema.json"
    fi
done
installed=$(node -p "require('$work/node_modules/@grafana/schema/package.json').version")
printf '@grafana/schema %s\nts-json-schema-generator %s\n' "$installed" "$GENERATOR_VERSION" > VERSION
echo "generated from @grafana/schema $installed into $(pwd)"
