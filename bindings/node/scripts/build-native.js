'use strict';
// The package's two npm lifecycle scripts.
//
// `prepare` (no argument): builds libsegstore.so with the checkout's scripts/build-lib.sh
// (cargo, release profile, without the CLI and daemon features: the build the Python wheel and
// scripts/install-c.sh use too) and copies it to native/libsegstore.so in this package. npm runs
// it before `npm pack` (so the tarball carries the library), on `npm install` inside this
// directory, and when another project installs this directory.
//
// `install` (`--install`): what a project installing this directory needs beyond the library.
// npm 10 and later install a directory outside the project as a symlink to it, and install none
// of its dependencies, anywhere (npm/cli#4165: intended); Node resolves `require('koffi')` from
// the real path of index.js, the checkout, so it would not find koffi even in the project. So in
// a checkout, when koffi does not resolve from this directory, this runs
// `npm install --omit=dev --omit=peer` here: koffi lands in bindings/node/node_modules and
// nothing else (the SDK stays a peer: the project's own copy is the only one). It also builds the
// library if `prepare` did not.
//
// Outside a segstore checkout (the tarball, or a copy npm packed) both only check that
// native/libsegstore.so is there: installing the tarball needs no script (`--ignore-scripts`).

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

function build() {
  console.error(`segstore-ld: building libsegstore.so with ${BUILD}`);
  const out = execFileSync('bash', [BUILD], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const built = out.trim().split('\n').pop();
  fs.mkdirSync(path.dirname(DEST), { recursive: true });
  const tmp = `${DEST}.tmp`;
  fs.copyFileSync(built, tmp);
  fs.chmodSync(tmp, 0o755);
  fs.renameSync(tmp, DEST);
  console.error(`segstore-ld: ${DEST}`);
}

function koffiResolves() {
  try {
    require.resolve('koffi', { paths: [PACKAGE] });
    return true;
  } catch {
    return false;
  }
}

// The outer npm passes its settings to scripts as npm_config_* variables. Those that say where
// and what to install (prefix, global, omit, install-links, ...) describe the project's install,
// not this one, so only the ones about reaching the registry are kept.
const KEPT_NPM_CONFIG = new Set([
  'cache',
  'userconfig',
  'globalconfig',
  'registry',
  'cafile',
  'ca',
  'strict_ssl',
  'proxy',
  'https_proxy',
  'noproxy',
  'loglevel',
  'offline',
  'prefer_offline',
  'prefer_online',
]);

function npmEnv() {
  const env = {};
  for (const [name, value] of Object.entries(process.env)) {
    const m = /^npm_config_(.*)$/i.exec(name);
    if (m && !KEPT_NPM_CONFIG.has(m[1].toLowerCase()) && !/:registry$/i.test(m[1])) continue;
    env[name] = value;
  }
  return env;
}

function installDependencies() {
  const args = [
    'install',
    '--prefix',
    PACKAGE,
    '--omit=dev',
    '--omit=peer',
    '--no-save',
    '--ignore-scripts',
    '--no-audit',
    '--no-fund',
  ];
  console.error(
    `segstore-ld: installed as a link to ${PACKAGE}, whose dependencies npm does not install: ` +
      `npm ${args.join(' ')}`,
  );
  // npm_execpath is the npm running this script; run the same one with the same node.
  const npmCli = process.env.npm_execpath;
  const [cmd, argv] =
    npmCli && /\.[cm]?js$/.test(npmCli) ? [process.execPath, [npmCli, ...args]] : ['npm', args];
  execFileSync(cmd, argv, { cwd: PACKAGE, env: npmEnv(), stdio: ['ignore', 2, 2] });
  if (!koffiResolves()) {
    throw new Error(`segstore-ld: koffi still does not resolve from ${PACKAGE} after npm install`);
  }
}

const install = process.argv.includes('--install');
if (inCheckout()) {
  if (!install || !fs.existsSync(DEST)) build();
  if (install && !koffiResolves()) installDependencies();
} else if (!fs.existsSync(DEST)) {
  console.error(
    `segstore-ld: ${DEST} is missing and ${PACKAGE} is not bindings/node of a segstore ` +
      'checkout to build it from: install the tarball that `npm pack` makes in bindings/node ' +
      '(it carries the library), or install ./bindings/node from a checkout',
  );
  process.exit(1);
}
