'use strict';
// examples/electron-main.js cannot run here (no Electron): it must parse, and every name it
// takes from the package must exist.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const pkg = require('../src');

const EXAMPLE = path.join(__dirname, '..', 'examples', 'electron-main.js');

test('the Electron example parses (node --check)', () => {
  const r = spawnSync(process.execPath, ['--check', EXAMPLE], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
});

test('the Electron example uses only names the package exports, and the calls it makes exist', () => {
  const src = fs.readFileSync(EXAMPLE, 'utf8');
  const m = /const \{([^}]*)\} = require\('@sidecar\/client'\)/.exec(src);
  assert.ok(m, 'the example does not import the package');
  const names = m[1].split(',').map((s) => s.trim()).filter(Boolean);
  assert.ok(names.length >= 3);
  for (const n of names) assert.ok(n in pkg, `${n} is not exported`);
  const c = new pkg.SidecarClient({ endpoint: { port: 1, token: 'x'.repeat(16) } });
  for (const call of src.matchAll(/client\??\.((?:agents\.)?[a-zA-Z]+)\(/g)) {
    const target = call[1].startsWith('agents.') ? c.agents[call[1].slice(7)] : c[call[1]];
    assert.equal(typeof target, 'function', `client.${call[1]} does not exist`);
  }
  assert.equal(JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')).name, '@sidecar/client');
});
