'use strict';
// npm's `prepare` script: builds libsegstore.so with the checkout's scripts/build-lib.sh (cargo,
// release profile, without the CLI and daemon features: the build the Python wheel and
// scripts/install-c.sh use too) and copies it to native/libsegstore.so in this package.
//
// npm runs `prepare` before `npm pack` (so the tarball ships the library, and installing the
// tarball runs no script at all), on `npm install` inside this directory, and when another
// project installs this directory (`npm install ./bindings/node`). Outside a segstore checkout
// it only checks that native/libsegstore.so is there.

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const PACKAGE = path.resolve(__dirname, '..');
const CHECKOUT = path.resolve(PACKAGE, '..', '..');
const DEST = path.join(PACKAGE, 'native', 'libsegstore.so');
const BUILD = path.join(CHECKOUT, 'scripts', 'build-lib.sh');

function inCheckout() {
  const manifest = path.join(CHECKOUT, 'Cargo.toml');
  return (
    fs.existsSync(BUILD) &&
    fs.existsSync(manifest) &&
    /^name = "segstore"$/m.test(fs.readFileSync(manifest, 'utf8'))
  );
}

if (inCheckout()) {
  console.error(`segstore-ld: building libsegstore.so with ${BUILD}`);
  const out = execFileSync('bash', [BUILD], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const built = out.trim().split('\n').pop();
  fs.mkdirSync(path.dirname(DEST), { recursive: true });
  const tmp = `${DEST}.tmp`;
  fs.copyFileSync(built, tmp);
  fs.chmodSync(tmp, 0o755);
  fs.renameSync(tmp, DEST);
  console.error(`segstore-ld: ${DEST}`);
} else if (!fs.existsSync(DEST)) {
  console.error(
    `segstore-ld: ${DEST} is missing and ${PACKAGE} is not bindings/node of a segstore ` +
      'checkout to build it from: install the tarball that `npm pack` makes in bindings/node ' +
      '(it carries the library), or install ./bindings/node from a checkout',
  );
  process.exit(1);
}
