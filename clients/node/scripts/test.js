#!/usr/bin/env node
'use strict';
// `npm test`: every test/*.test.js with Node's built-in runner, one file at a time (they spawn
// real daemons; the machine may be shared) and a per-test timeout where this Node has the flags
// (--test-concurrency and --test-timeout came in Node 20.10 / 20.11; the runner itself in 18).

const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const [major, minor] = process.versions.node.split('.').map(Number);
const atLeast = (M, m) => major > M || (major === M && minor >= m);
const dir = path.join(__dirname, '..', 'test');
const files = fs.readdirSync(dir).filter((f) => f.endsWith('.test.js')).sort().map((f) => path.join(dir, f));
const args = ['--test'];
if (atLeast(20, 10)) args.push('--test-concurrency=1');
if (atLeast(20, 11)) args.push('--test-timeout=120000');
const pattern = process.argv.slice(2);
const r = spawnSync(process.execPath, [...args, ...pattern, ...files], { stdio: 'inherit' });
process.exit(r.status === null ? 1 : r.status);
