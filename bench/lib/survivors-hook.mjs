/**
 * Preloaded into proxycore by `npm run bench -- --survivors` or `--allocations`
 * (node --import <this file>?out=DIR[&young=1]). SIGUSR2 starts V8's sampling heap profiler; the
 * next SIGUSR2 stops it and writes DIR/survivors-<pid>-<k>.heapprofile (Chrome DevTools › Memory
 * can load it).
 * - By default it keeps only the objects a young-generation GC did not collect
 *   (includeObjectsCollectedByMinorGC: false): what gets promoted to the old generation, dead or
 *   alive, plus whatever is still alive when sampling stops.
 * - With young=1 it keeps every sampled allocation, the ones that died young too: what a request
 *   allocates, which sets how often the scavenger runs.
 */
import { Session } from 'node:inspector'
import { renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

const params = new URL(import.meta.url).searchParams
const dir = params.get('out')
if (!dir) throw new Error('survivors-hook: no ?out=DIR in the --import URL')
const interval = Number(params.get('interval') ?? 4096)
const young = params.get('young') === '1'
const session = new Session()
session.connect()
let k = 0
let sampling = false
process.on('SIGUSR2', () => {
  if (!sampling) {
    sampling = true
    session.post('HeapProfiler.startSampling', {
      samplingInterval: interval, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: young,
    }, (err) => { if (err) process.stderr.write(`survivors-hook: ${err.message}\n`) })
    return
  }
  sampling = false
  session.post('HeapProfiler.stopSampling', (err, r) => {
    if (err) { process.stderr.write(`survivors-hook: ${err.message}\n`); return }
    const file = join(dir, `survivors-${process.pid}-${k++}.heapprofile`)
    // written whole, then renamed: the bench polls for the final name
    writeFileSync(`${file}.part`, JSON.stringify(r.profile))
    renameSync(`${file}.part`, file)
  })
})
