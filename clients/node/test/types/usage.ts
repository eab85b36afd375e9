import { SidecarClient, spawnSidecar, RetryableInsertError, NotFoundError } from '../..';
async function main() {
  const d = await spawnSidecar({ executable: 'sidecar', dataDir: '/tmp/x', allowedRoots: ['/tmp'] });
  const c = new SidecarClient({ endpoint: d, role: 'observer' });
  c.on('run_progress', (f) => { const n: number = f.files_done; void n; });
  c.onInsert(async (table, data, meta) => { if (!meta.idempotencyKey) throw new RetryableInsertError('x'); return { id: 1 }; });
  const r = await c.runAgent('a_1');
  const id: string = r.run_id;
  const r2 = await c.runAgent({ agent_id: 'a', full: true });
  const s = await c.status();
  const p: number = s.outbox_pending;
  try { await c.cancelRun(id); } catch (e) { if (e instanceof NotFoundError) console.log(e.code, r2, p); }
  const l = await c.request('run_list', { limit: 5 });
  console.log(l.runs);
}
void main;
