'use strict';
// The app's own projects through the real daemon: projectsSync links records to the one
// project their document names; a document introducing a new project gives a `projects`
// insert first, and its tasks and timelines reach onInsert only after the handler returned
// the project's id, carrying it.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { tmpDir, startDaemon, client, nextEvent, sqlite, sleep } = require('./helpers');

function write(file, text) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text);
}

async function agent(c, folder, dataTypes) {
  const reply = await c.agents.upsert({
    kind: 'local', name: path.basename(folder), directories: [folder], extensions: ['.md'],
    data_types: dataTypes, schedule_cron: '0 3 * * *', watch: false,
  });
  return reply;
}

test('projectsSync: a record gets the projectId of the one project its document names', async (t) => {
  const root = tmpDir(t);
  const docs = path.join(root, 'docs');
  write(path.join(docs, 'Harbor Bakery', 'weekly.md'), '# Weekly sync\n\n## Action items\n- [ ] Priya to order new flour sacks\n');
  write(path.join(docs, 'misc', 'admin.md'), '# Admin\n\nNothing about clients.\n\n## Action items\n- [ ] Luis to pay the invoice\n');
  const d = await startDaemon(t, root);
  const c = client(t, { endpoint: d });
  const got = new Map();
  c.onInsert(async (table, data, meta) => { got.set(data.title, { data, meta }); return { id: `t_${got.size}` }; });
  await c.connect();
  const synced = await c.projectsSync({ projects: [
    { id: 'p_12', name: 'Harbor Bakery website', client: 'Harbor Bakery', aliases: ['HB site'] },
    { id: 'p_13', name: 'Spring campaign' }] });
  assert.equal(synced.count, 2);
  const bad = await c.projectsSync({ projects: [{ id: 'p_1', name: '' }] }).then(() => null, (e) => e);
  assert.equal(bad && bad.field, 'projects[0].name', 'a bad list is refused, naming the field');
  const { agent: a } = await agent(c, docs, ['tasks']);
  const { run_id: runId } = await c.runAgent(a.id);
  const delivered = await nextEvent(c, 'run_delivered', (f) => f.run.id === runId);
  assert.equal(delivered.run.status, 'success');
  const flour = got.get('Priya to order new flour sacks');
  assert.equal(flour.data.projectId, 'p_12');
  assert.deepEqual(flour.meta.source.project, { id: 'p_12', by: 'client', term: 'Harbor Bakery', in: 'folder' });
  const invoice = got.get('Luis to pay the invoice');
  assert.equal(invoice.data.projectId, undefined, 'a document naming no project links none');
});

test('a new project: its tasks and timelines are held until onInsert returns its id, then carry it', async (t) => {
  const root = tmpDir(t);
  const docs = path.join(root, 'docs');
  const launch = new Date(Date.now() + 60 * 86400e3);
  const milestone = `Launch target: ${launch.getUTCDate()} ${launch.toLocaleString('en-GB', { month: 'long', timeZone: 'UTC' })} ${launch.getUTCFullYear()}`;
  write(path.join(docs, 'kickoff.md'), `# Kickoff — Nova Dental rebrand\n\nClient: Nova Dental\n\n## Milestones\n- ${milestone}\n\n## Action items\n- [ ] Priya to send the mood board\n- [ ] Tom to book the photo shoot\n`);
  const d = await startDaemon(t, root);
  const c = client(t, { endpoint: d });
  const seen = [];
  let letProjectIn;
  const projectMayGoIn = new Promise((resolve) => { letProjectIn = resolve; });
  c.onInsert(async (table, data, meta) => {
    seen.push({ table, data, meta });
    if (table === 'projects') {
      await projectMayGoIn; // the app's database takes its time
      return { id: 'p_new_1' };
    }
    return { id: `r_${seen.length}` };
  });
  await c.connect();
  const saved = await agent(c, docs, ['tasks', 'timelines', 'projects']);
  assert.ok(saved.warnings.some((w) => w.startsWith('timelines need a project')), JSON.stringify(saved.warnings));
  const { run_id: runId } = await c.runAgent(saved.agent.id);
  while (seen.length === 0) await sleep(50);
  await sleep(1500);
  assert.deepEqual(seen.map((s) => s.table), ['projects'], 'records went out before their project was stored');
  assert.equal(seen[0].data.name, 'Nova Dental rebrand');
  assert.equal(seen[0].meta.source.introduces.by, 'kickoff');
  letProjectIn();
  const delivered = await nextEvent(c, 'run_delivered', (f) => f.run.id === runId);
  assert.equal(delivered.run.status, 'success');
  assert.equal(delivered.run.extracted, 4);
  const children = seen.slice(1);
  assert.deepEqual(children.map((s) => s.table).sort(), ['tasks', 'tasks', 'timelines']);
  assert.deepEqual(new Set(children.map((s) => s.data.title)),
    new Set(['Priya to send the mood board', 'Tom to book the photo shoot', milestone]));
  for (const child of children) {
    assert.equal(child.data.projectId, 'p_new_1', JSON.stringify(child.data));
    assert.equal(child.meta.source.project.id, 'p_new_1');
  }
  await c.close();
  await d.stop();
  const held = sqlite(path.join(root, 'data', 'sidecar.sqlite3'), 'SELECT count(*) AS n FROM held');
  assert.deepEqual(held, [{ n: 0 }]);
});

function dateWords(days) {
  const d = new Date(Date.now() + days * 86400e3);
  return `${d.getUTCDate()} ${d.toLocaleString('en-GB', { month: 'long', timeZone: 'UTC' })} ${d.getUTCFullYear()}`;
}

test('a timeline whose document names one of the app\'s projects carries its projectId; one with no project is held and said', async (t) => {
  const root = tmpDir(t);
  const docs = path.join(root, 'docs');
  const when = dateWords(45);
  write(path.join(docs, 'Harbor Bakery', 'plan.md'), `# Weekly sync\n\n## Milestones\n- Site launch: ${when}\n\n## Action items\n- [ ] Priya to order new flour sacks\n`);
  write(path.join(docs, 'misc', 'admin.md'), `# Admin\n\nNothing about clients.\n\n## Milestones\n- Audit deadline: ${when}\n\n## Action items\n- [ ] Luis to pay the invoice\n`);
  const d = await startDaemon(t, root);
  const c = client(t, { endpoint: d });
  const got = [];
  c.onInsert(async (table, data, meta) => { got.push({ table, data, meta }); return { id: `r_${got.length}` }; });
  await c.connect();
  await c.projectsSync({ projects: [
    { id: 'p_12', name: 'Harbor Bakery website', client: 'Harbor Bakery', aliases: [] }] });
  const { agent: a } = await agent(c, docs, ['tasks', 'timelines']);
  const { run_id: runId } = await c.runAgent(a.id);
  const finished = await nextEvent(c, 'run_finished', (f) => f.run.id === runId);
  await nextEvent(c, 'run_delivered', (f) => f.run.id === runId);
  const timelines = got.filter((g) => g.table === 'timelines');
  assert.deepEqual(timelines.map((g) => [g.data.title, g.data.projectId]), [[`Site launch: ${when}`, 'p_12']]);
  assert.deepEqual(timelines[0].meta.source.project, { id: 'p_12', by: 'client', term: 'Harbor Bakery', in: 'folder' });
  const held = finished.run.errors.filter((e) => e.includes('held: no project'));
  assert.equal(held.length, 1, JSON.stringify(finished.run.errors));
  assert.ok(held[0].includes('admin.md') && held[0].includes('Audit deadline'), held[0]);
  assert.equal(got.filter((g) => g.table === 'tasks').length, 2);
});

test('two windows: records held for a new project reach the writer once; the observer sees status.held and no insert', async (t) => {
  const root = tmpDir(t);
  const docs = path.join(root, 'docs');
  const milestone = `Launch target: ${dateWords(60)}`;
  write(path.join(docs, 'kickoff.md'), `# Kickoff — Nova Dental rebrand\n\nClient: Nova Dental\n\n## Milestones\n- ${milestone}\n\n## Action items\n- [ ] Priya to send the mood board\n- [ ] Tom to book the photo shoot\n`);
  const d = await startDaemon(t, root);
  const writer = client(t, { endpoint: d });
  const observer = client(t, { endpoint: d, role: 'observer' });
  const seen = [];
  const observed = [];
  let letProjectIn;
  const projectMayGoIn = new Promise((resolve) => { letProjectIn = resolve; });
  writer.onInsert(async (table, data) => {
    seen.push({ table, data });
    if (table === 'projects') { await projectMayGoIn; return { id: 'p_new_2' }; }
    return { id: `r_${seen.length}` };
  });
  observer.onInsert(async (table, data) => { observed.push({ table, data }); return { id: 'never' }; });
  await writer.connect();
  await observer.connect();
  const saved = await agent(writer, docs, ['tasks', 'timelines', 'projects']);
  const { run_id: runId } = await writer.runAgent(saved.agent.id);
  while (seen.length === 0) await sleep(50);
  const waiting = await observer.status();
  assert.equal(waiting.held, 3, JSON.stringify(waiting));
  assert.equal(waiting.outbox_pending, 1, 'the project, not its held records');
  letProjectIn();
  const delivered = await nextEvent(observer, 'run_delivered', (f) => f.run.id === runId);
  assert.equal(delivered.run.delivered, 4);
  await sleep(1000);
  assert.deepEqual(seen.map((s) => s.table).sort(), ['projects', 'tasks', 'tasks', 'timelines']);
  assert.equal(new Set(seen.map((s) => s.data.title || s.data.name)).size, 4, 'an insert came twice');
  for (const s of seen.slice(1)) assert.equal(s.data.projectId, 'p_new_2');
  assert.deepEqual(observed, [], 'an observer got an insert');
  const after = await observer.status();
  assert.equal(after.held, 0);
  assert.equal(after.outbox_pending, 0);
});
