#!/bin/sh
# check.sh (make check-deploy): checks what docs/deploy holds against what it names.
#  1. Every setting of tidings.env, and every environment variable cmd/tidings reads, is in the
#     settings table of docs/operations.md.
#  2. tidings.service passes `systemd-analyze verify` with no complaint at all (verify exits 0
#     on an unknown key or a value it cannot parse, so any line naming the unit fails the
#     check). verify needs ExecStart's binary to exist: it checks a copy of the unit in which
#     only that path is replaced by a stub. Where systemd-analyze is missing, step 2 is skipped.
set -eu
cd "$(dirname "$0")/../.."
unit=docs/deploy/tidings.service
envfile=docs/deploy/tidings.env
ops=docs/operations.md
fail=0

# The names in the table rows of "Configuration" (lines starting with "| `").
documented=$(grep '^| `' "$ops" | grep -o '`[A-Z][A-Z0-9_]*`' | tr -d '`' | sort -u)
in_table() { printf '%s\n' "$documented" | grep -qx "$1"; }

for name in $(sed -n 's/^#\{0,1\}\([A-Z][A-Z0-9_]*\)=.*/\1/p' "$envfile" | sort -u); do
	case $name in
	GO*) grep -q "\`$name\`" "$ops" || { echo "$envfile: $name is not mentioned in $ops" >&2; fail=1; } ;;
	*) in_table "$name" || { echo "$envfile: $name is not in the settings table of $ops" >&2; fail=1; } ;;
	esac
done
for name in $(ls cmd/tidings/*.go | grep -v '_test\.go$' | xargs grep -oh '"\(TIDINGS_[A-Z0-9_]*\|DATABASE_URL\)"' | tr -d '"' | sort -u); do
	in_table "$name" || { echo "cmd/tidings reads $name, which is not in the settings table of $ops" >&2; fail=1; }
done
[ "$fail" -eq 0 ] || exit 1
echo "check-deploy: the settings of $envfile and cmd/tidings are all in $ops"

if ! command -v systemd-analyze >/dev/null 2>&1; then
	echo "check-deploy: skipped: systemd-analyze not available"
	exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '#!/bin/sh\nexit 0\n' >"$tmp/tidings"
chmod 755 "$tmp/tidings"
grep -q '^ExecStart=/usr/local/bin/tidings serve$' "$unit" || {
	echo "$unit: no line ExecStart=/usr/local/bin/tidings serve (update check.sh with it)" >&2
	exit 1
}
sed "s|^ExecStart=/usr/local/bin/tidings |ExecStart=$tmp/tidings |" "$unit" >"$tmp/tidings.service"
rc=0
out=$(systemd-analyze verify "$tmp/tidings.service" 2>&1) || rc=$?
if [ "$rc" -ne 0 ] || printf '%s\n' "$out" | grep -q 'tidings\.service'; then
	printf '%s\n' "$out" | sed "s|$tmp/tidings.service|$unit|" >&2
	echo "check-deploy: systemd-analyze verify $unit failed (exit $rc)" >&2
	exit 1
fi
[ -z "$out" ] || printf 'check-deploy: systemd-analyze said, of other units:\n%s\n' "$out"
echo "check-deploy: systemd-analyze verify $unit: ok"
