'use strict';
// Test wiring: the real daemon from the project's venv, temp folders, task notes.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { spawnSidecar, SidecarClient } = require('../src');

const REPO = path.resolve(__dirname, '..', '..', '..');
/** The daemon under test: SIDECAR_BIN, else the project's venv. */
const SIDECAR_BIN = process.env.SIDECAR_BIN || path.join(REPO, '.venv', 'bin', 'sidecar');
const PYTHON = path.join(path.dirname(SIDECAR_BIN), 'python');

function tmpDir(t, prefix = 'sidecar-node-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Spawn the real daemon over `root` (data, logs and docs below it); stopped after the test. */
async function startDaemon(t, root, extra = {}) {
  const stderr = [];
  const sc = await spawnSidecar({
    executable: SIDECAR_BIN,
    dataDir: path.join(root, 'data'),
    logDir: path.join(root, 'logs'),
    allowedRoots: [root],
    onStderr: (line) => stderr.push(line),
    readyTimeoutMs: 60_000,
    ...extra,
  });
  sc.stderrLines = stderr;
  t.after(async () => { if (sc.running) await sc.stop({ timeoutMs: 6000 }); });
  return sc;
}

function client(t, options) {
  const c = new SidecarClient({ backoff: { initialMs: 50, maxMs: 500, factor: 2 }, requestTimeoutMs: 20_000, ...options });
  t.after(() => c.close());
  return c;
}

const PEOPLE = ['Alice', 'Bruno', 'Chen', 'Dana', 'Emeka', 'Farah'];
const CHORES = ['send the revised logo', 'book the photographer', 'update the pricing page',
  'draft the launch email', 'order the sample prints', 'review the contract'];

/**
 * `files` Markdown notes in `folder` with `perFile` unchecked task lines each, every line
 * tagged with a unique `<prefix><i>x<j>` word; returns the tags (what the app must receive).
 */
function writeTaskNotes(folder, files, perFile, prefix = 'acct') {
  fs.mkdirSync(folder, { recursive: true });
  const tags = new Set();
  for (let i = 0; i < files; i++) {
    const lines = [];
    for (let j = 0; j < perFile; j++) {
      const tag = `${prefix}${i}x${j}`;
      tags.add(tag);
      lines.push(`- [ ] ${PEOPLE[(i + j) % PEOPLE.length]} to ${CHORES[(i * 3 + j) % CHORES.length]} for the ${tag} account`);
    }
    fs.writeFileSync(path.join(folder, `notes-${String(i).padStart(3, '0')}.md`),
      `# Weekly sync ${i}\n\n## Notes\n- We keep the hosting.\n\n## Action items\n${lines.join('\n')}\n`);
  }
  return tags;
}

/** The tag a task title carries (see writeTaskNotes). */
function tagOf(title, prefix = 'acct') {
  const m = new RegExp(`${prefix}\\d+x\\d+`, 'i').exec(title || '');
  return m ? m[0].toLowerCase() : null;
}

async function makeAgent(c, folder, name = 'Notes') {
  const reply = await c.agents.upsert({
    kind: 'local', name, directories: [folder], extensions: ['.md'], data_types: ['tasks'],
    schedule_cron: '0 3 * * *', watch: false,
  });
  return reply.agent.id;
}

/** Resolve with the first `event` frame for which `pred` holds (or reject after `ms`). */
function nextEvent(emitter, event, pred = () => true, ms = 60_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { emitter.off(event, on); reject(new Error(`no ${event} within ${ms} ms`)); }, ms);
    function on(frame) {
      if (!pred(frame)) return;
      clearTimeout(timer);
      emitter.off(event, on);
      resolve(frame);
    }
    emitter.on(event, on);
  });
}

/** Rows of the daemon's SQLite (read with the venv's Python, after the daemon stopped). */
function sqlite(dbPath, sql) {
  const out = execFileSync(PYTHON, ['-c',
    'import json,sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.row_factory=sqlite3.Row; '
    + 'print(json.dumps([dict(r) for r in c.execute(sys.argv[2])]))', dbPath, sql]);
  return JSON.parse(out.toString());
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

module.exports = {
  REPO, SIDECAR_BIN, PYTHON, tmpDir, startDaemon, client, writeTaskNotes, tagOf, makeAgent,
  nextEvent, sqlite, sleep,
};
