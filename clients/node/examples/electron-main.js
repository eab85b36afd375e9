'use strict';
// Electron main process: spawn the sidecar, keep it alive, take its inserts into the app's
// database, and drive a tray with "Run now", "Cancel" and the run's progress in the tooltip.
// (Not run by the tests: Electron is not installed there. `node --check` keeps it valid.)

const path = require('node:path');
const { app, Tray, Menu, dialog, nativeImage, shell } = require('electron');
const {
  superviseSidecar, SidecarClient, RetryableInsertError, SidecarStartError, DatabaseLockedError,
  AlreadyRunningError,
} = require('@sidecar/client');

// The app's own database (better-sqlite3 here; any store works). The idempotency store lives
// in the same database, written in the same transaction as the row: a crash can never leave
// a row without its key, so a record the sidecar sends again is never inserted twice.
const Database = require('better-sqlite3');

const SIDECAR_EXE = app.isPackaged
  ? path.join(process.resourcesPath, 'sidecar', process.platform === 'win32' ? 'sidecar.exe' : 'sidecar')
  : path.join(__dirname, '..', '..', '..', '.venv', 'bin', 'sidecar');

let db;
let tray;
let sidecar = null; // the SidecarSupervisor (keeps one SidecarProcess running)
let client = null;
let quitting = false;
const runs = new Map(); // run id → {agentId, done, total, found}

function openDatabase() {
  db = new Database(path.join(app.getPath('userData'), 'app.sqlite3'));
  db.exec(`CREATE TABLE IF NOT EXISTS tasks (id INTEGER PRIMARY KEY, title TEXT, data TEXT);
           CREATE TABLE IF NOT EXISTS sidecar_keys (key TEXT PRIMARY KEY, result TEXT)`);
}

/** The app's idempotency store (the package's IdempotencyStore contract). */
const idempotencyStore = {
  get(key) {
    const row = db.prepare('SELECT result FROM sidecar_keys WHERE key = ?').get(key);
    return row ? JSON.parse(row.result) : undefined;
  },
  set() { /* written by insert() in the row's own transaction */ },
};

function insert(table, data, meta) {
  if (table !== 'tasks') return { skipped: table }; // tables this app does not keep yet
  try {
    return db.transaction(() => {
      const { lastInsertRowid } = db.prepare('INSERT INTO tasks (title, data) VALUES (?, ?)')
        .run(String(data.title || ''), JSON.stringify(data));
      const result = { id: Number(lastInsertRowid) };
      if (meta.idempotencyKey) {
        db.prepare('INSERT INTO sidecar_keys (key, result) VALUES (?, ?)').run(meta.idempotencyKey, JSON.stringify(result));
      }
      return result;
    })();
  } catch (err) {
    // a locked database heals: ask the sidecar to send it again later (older sidecars
    // take this as a plain failed insert)
    if (err.code === 'SQLITE_BUSY') throw new RetryableInsertError(err.message);
    throw err;
  }
}

async function startSidecar() {
  try {
    // respawned after a crash (new port, new token); the client below follows by itself
    sidecar = await superviseSidecar({
      executable: SIDECAR_EXE,
      dataDir: path.join(app.getPath('userData'), 'sidecar'),
      logDir: app.getPath('logs'),
      allowedRoots: [app.getPath('documents'), app.getPath('desktop')],
      onStderr: (line) => console.log(`[sidecar] ${line}`),
    });
  } catch (err) {
    if (err instanceof AlreadyRunningError) {
      dialog.showErrorBox('Already running', err.message); // another copy of the app
    } else if (err instanceof DatabaseLockedError) {
      dialog.showErrorBox('Database in use', `${err.message}\n\nClose that program and restart.`);
    } else if (err instanceof SidecarStartError) {
      dialog.showErrorBox('The assistant could not start', `${err.message} (${err.code}, exit ${err.exitCode})`);
    } else {
      throw err;
    }
    return null;
  }
  sidecar.on('restart', ({ error }) => {
    console.error('sidecar ended, restarting:', error.message);
    setTrayTooltip('Assistant restarting…');
  });
  sidecar.on('give_up', (err) => dialog.showErrorBox('The assistant stopped', err.message));
  return sidecar;
}

function setTrayTooltip(text) {
  if (tray) tray.setToolTip(text);
}

function showProgress() {
  const active = [...runs.values()];
  if (!active.length) {
    setTrayTooltip('Assistant: idle');
    return;
  }
  setTrayTooltip(active.map((r) => `${r.name}: ${r.done}/${r.total || '?'} documents, ${r.found} found`).join('\n'));
}

async function buildMenu() {
  let agents = [];
  try {
    agents = client && client.connected ? await client.agents.list() : [];
  } catch (err) {
    console.error('agent list failed:', err.message);
  }
  const running = new Set([...runs.values()].map((r) => r.agentId));
  const items = agents.map((agent) => ({
    label: agent.name,
    submenu: [
      {
        label: 'Run now',
        enabled: !running.has(agent.id),
        click: () => client.runAgent(agent.id).catch((err) => dialog.showErrorBox('Run failed', err.message)),
      },
      {
        label: 'Cancel',
        enabled: running.has(agent.id),
        click: () => {
          const runId = [...runs].find(([, r]) => r.agentId === agent.id)?.[0];
          if (runId) client.cancelRun(runId).catch((err) => console.error('cancel failed:', err.message));
        },
      },
    ],
  }));
  tray.setContextMenu(Menu.buildFromTemplate([
    ...items,
    { type: 'separator' },
    { label: 'Open logs', click: () => shell.openPath(app.getPath('logs')) },
    { label: 'Quit', click: () => app.quit() },
  ]));
}

async function main() {
  openDatabase();
  tray = new Tray(nativeImage.createEmpty());
  setTrayTooltip('Assistant starting…');
  if (!(await startSidecar())) return;

  // The supervisor is asked for the endpoint before every reconnect: after a restart, the new one.
  client = new SidecarClient({ endpoint: sidecar, role: 'writer', clientName: `electron/${app.getVersion()}`, idempotencyStore });
  client.onInsert(async (table, data, meta) => insert(table, data, meta));

  client.on('connected', () => { showProgress(); buildMenu(); });
  client.on('disconnected', () => setTrayTooltip('Assistant: reconnecting…'));
  client.on('run_started', ({ run }) => {
    runs.set(run.id, { agentId: run.agent_id, name: run.agent_id, done: 0, total: 0, found: 0 });
    showProgress();
    buildMenu();
  });
  client.on('run_progress', (f) => {
    const r = runs.get(f.run_id) || { agentId: f.agent_id, name: f.agent_id };
    Object.assign(r, { done: f.files_done, total: f.files_total, found: f.items_found });
    runs.set(f.run_id, r);
    showProgress();
  });
  client.on('run_finished', ({ run }) => {
    runs.delete(run.id);
    showProgress();
    buildMenu();
    if (run.status !== 'success') console.warn(`run ${run.id} ${run.status}:`, run.errors);
  });
  client.on('agent_needs_reauth', (f) => {
    dialog.showMessageBox({ message: `Reconnect ${f.account || f.provider}`, detail: f.message });
  });

  await client.connect();
}

app.whenReady().then(main);

app.on('before-quit', async (event) => {
  if (quitting || !sidecar) return;
  quitting = true;
  event.preventDefault();
  await client?.close();
  await sidecar.stop(); // no respawn; it would also stop by itself: --parent-pid and stdin EOF
  app.quit();
});
