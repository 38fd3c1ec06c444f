#!/bin/sh
# Packs tidings-client as a web app gets it, installs the tarball into the typed example app,
# and checks the app (and the declarations, skipLibCheck off) with tsc --noEmit; then checks
# the library's source and the bundled page with the same tsc. TypeScript comes from the
# example's package-lock.json. Run by `make test-client` (and so `make test`).
set -eu
cd "$(dirname "$0")"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

npm pack --silent --pack-destination "$out" >/dev/null
tarball=$(ls "$out"/tidings-client-*.tgz)

# The package holds the module, its declarations, the manifest and the README, nothing else.
files=$(tar -tzf "$tarball" | sort | tr '\n' ' ')
want='package/README.md package/package.json package/tidings.d.ts package/tidings.js '
if [ "$files" != "$want" ]; then
	echo "check: the package holds [$files], want [$want]" >&2
	exit 1
fi

cd example
npm ci --no-audit --no-fund --silent
npm install --no-save --no-audit --no-fund --silent "$tarball"
cmp node_modules/tidings-client/tidings.js ../tidings.js
cmp node_modules/tidings-client/tidings.d.ts ../tidings.d.ts

# The installed package resolves by its name, and its exports are the declared ones.
node --input-type=module -e "
import * as lib from 'tidings-client';
import { readFileSync } from 'node:fs';
const dts = readFileSync('node_modules/tidings-client/tidings.d.ts', 'utf8');
const declared = [...dts.matchAll(/^export declare (?:class|const|function) (\w+)/gm)].map((m) => m[1]).sort();
const exported = Object.keys(lib).sort();
if (JSON.stringify(declared) !== JSON.stringify(exported)) {
  console.error('check: tidings.js exports', exported, 'but tidings.d.ts declares', declared);
  process.exit(1);
}
"

# The guide's TypeScript example (docs/clients.md) is part of the app, as written there.
awk '/^```ts$/ { on = 1; next } /^```$/ { if (on) exit } on' ../../../docs/clients.md > src/guide.ts
grep -q "from 'tidings-client'" src/guide.ts

npx --no-install tsc --noEmit -p .

# The library's own source (JSDoc, strict) and the bundled page, typed against its declarations.
npx --no-install tsc -p ../tsconfig.json
echo "tidings-client: packed, installed and type-checked"
