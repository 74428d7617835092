#!/usr/bin/env bash
# Check that the Debian packages the tests use have the upstream versions listed in
# requirements/debian.txt (or the file given as $1). Exit 1, naming each difference and the fix.
# Packages not installed are reported too: scripts/services.sh install should have installed them.
set -euo pipefail
cd "$(dirname "$0")/.."
list=${1:-requirements/debian.txt}
status=0
while read -r package expected _; do
    case "$package" in ""|\#*) continue ;; esac
    installed=$(dpkg-query -W -f='${Version}' "$package" 2>/dev/null || true)
    upstream=${installed#*:}        # no epoch
    upstream=${upstream%-*}         # no Debian revision
    if [ -z "$installed" ]; then
        echo "error: Debian package $package is not installed (expected upstream $expected*)" >&2
        status=1
    elif [[ "$upstream" != "$expected"* ]]; then
        echo "error: Debian package $package is $installed, expected upstream $expected*;" \
             "run the whole suite with it, then update $list on purpose" >&2
        status=1
    fi
done < "$list"
exit $status
