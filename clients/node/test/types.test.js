'use strict';
// The TypeScript types and the frame tables are generated from docs/protocol.schema.json and
// docs/protocol.md: stale files fail here, a schema change flows through, the output compiles.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync, spawnSync } = require('node:child_process');
const gen = require('../scripts/gen-types');
const { SidecarClient } = require('../src');
const { REPO } = require('./helpers');

const PKG = path.resolve(__dirname, '..');
const DOCS = path.join(REPO, 'docs');

test('protocol.d.ts and src/protocol.generated.js are up to date with docs/', () => {
  const r = spawnSync(process.execPath, [path.join(PKG, 'scripts', 'gen-types.js'), '--check'], { encoding: 'utf8' });
  assert.equal(r.status, 0, `${r.stderr}\nrun \`npm run gen\` in clients/node and commit the result`);
});

test('every request frame in the schema is a client method; every push is listed', () => {
  const schema = JSON.parse(fs.readFileSync(path.join(DOCS, 'protocol.schema.json'), 'utf8'));
  const requests = Object.keys(schema).filter((t) => `${t}_result` in schema && t !== 'hello');
  const { REQUEST_METHODS } = require('../src/protocol.generated');
  const handshake = Object.values(REQUEST_METHODS).map((m) => m.type).filter((t) => /hello/.test(t));
  assert.deepEqual(handshake, [], 'hello (or its alias) became a request method');
  assert.ok(requests.includes('agent_upsert') && requests.includes('cancel_run'));
  for (const t of requests) {
    const method = t.replace(/_([a-z])/g, (_, ch) => ch.toUpperCase());
    assert.equal(typeof SidecarClient.prototype[method], 'function', `no client method for ${t}`);
  }
  const { PUSHES } = require('../src/protocol.generated');
  for (const t of ['run_started', 'run_progress', 'run_finished', 'agent_needs_reauth', 'oauth_status', 'tool_call']) {
    assert.ok(PUSHES.includes(t), `${t} is not a push event`);
  }
  assert.ok(!PUSHES.includes('hello_result') && !PUSHES.includes('error'));
});

test('JSON Schema to TypeScript, as the schema exporter writes it', () => {
  assert.equal(gen.tsType({}), 'unknown');
  assert.equal(gen.tsType({ type: 'string' }), 'string');
  assert.equal(gen.tsType({ type: 'integer' }), 'number');
  assert.equal(gen.tsType({ anyOf: [{ type: 'integer' }, { type: 'null' }] }), 'number | null');
  assert.equal(gen.tsType({ anyOf: [{ enum: ['writer', 'observer'] }, { type: 'null' }] }), '"writer" | "observer" | null');
  assert.equal(gen.tsType({ const: 'hello' }), '"hello"');
  assert.equal(gen.tsType({ type: 'array', items: { type: 'string' } }), 'string[]');
  assert.equal(gen.tsType({ type: 'array', items: { anyOf: [{ type: 'string' }, { type: 'null' }] } }), 'Array<string | null>');
  assert.equal(gen.tsType({ type: 'array' }), 'unknown[]');
  assert.equal(gen.tsType({ type: 'object' }), 'Record<string, unknown>');
  assert.equal(gen.tsType({ anyOf: [{}, { type: 'null' }] }), 'unknown');
});

test('a frame another engineer adds flows through the generator (schema + protocol.md)', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sidecar-docs-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const schema = JSON.parse(fs.readFileSync(path.join(DOCS, 'protocol.schema.json'), 'utf8'));
  const frame = (title, type, props, required) => ({
    title, description: `${title} frame.`, type: 'object',
    properties: { type: { const: type }, ...props }, required: ['type', ...required], additionalProperties: true,
  });
  schema.projects_sync = frame('ProjectsSync', 'projects_sync', { request_id: { type: 'string' }, projects: { type: 'array', items: { type: 'object' } } }, ['request_id', 'projects']);
  schema.projects_sync_result = frame('ProjectsSyncResult', 'projects_sync_result', { request_id: { type: 'string' }, count: { type: 'integer' } }, ['request_id', 'count']);
  schema.run_delivered = frame('RunDelivered', 'run_delivered', { run_id: { type: 'string' }, pending: { type: 'integer' } }, ['run_id']);
  schema.run_finished.properties.delivered = { anyOf: [{ type: 'integer' }, { type: 'null' }] };
  fs.writeFileSync(path.join(dir, 'protocol.schema.json'), JSON.stringify(schema));
  const md = fs.readFileSync(path.join(DOCS, 'protocol.md'), 'utf8')
    .replace('### Sidecar → client\n', '#### `projects_sync`\n\n### Sidecar → client\n\n#### `run_delivered`\n\n#### `projects_sync_result`\n');
  fs.writeFileSync(path.join(dir, 'protocol.md'), md);
  const files = gen.generate(dir);
  const dts = files[gen.OUT_DTS];
  assert.match(dts, /export interface ProjectsSync \{\n[^}]*projects: Array<Record<string, unknown>>|export interface ProjectsSync \{\n[^}]*projects: Record<string, unknown>\[\];/);
  assert.match(dts, /projectsSync\(fields: RequestFields<"projects_sync">, options\?: RequestOptions\): Promise<ProjectsSyncResult>;/);
  assert.match(dts, /run_delivered: RunDelivered;/);
  assert.match(dts, /export interface RunFinished \{[^}]*delivered\?: number \| null;/);
  const js = files[gen.OUT_JS];
  assert.match(js, /"projectsSync": \{\n\s*"type": "projects_sync"/);
  const r = spawnSync(process.execPath, [path.join(PKG, 'scripts', 'gen-types.js'), '--check'],
    { encoding: 'utf8', env: { ...process.env, SIDECAR_DOCS_DIR: dir } });
  assert.equal(r.status, 1, 'the committed types were not reported stale against a changed schema');
  assert.match(r.stderr, /stale: protocol\.d\.ts, src\/protocol\.generated\.js/);
});

test('the types compile, and a program using them is checked (tsc --strict)', () => {
  const tsc = path.join(PKG, 'node_modules', 'typescript', 'bin', 'tsc');
  const out = (() => {
    try {
      return execFileSync(process.execPath, [tsc, '--noEmit', '--strict', '--types', 'node', 'index.d.ts', 'protocol.d.ts', 'test/types/usage.ts'],
        { cwd: PKG, encoding: 'utf8' });
    } catch (e) {
      return `${e.stdout}${e.stderr}`;
    }
  })();
  assert.equal(out, '');
});
