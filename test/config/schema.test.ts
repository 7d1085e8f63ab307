/**
 * The published JSON Schema is the generated one, and the defaults the spawn schema documents are
 * the spawn manager's real defaults (one defaults table, docs checked against it).
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { guardLeaks } from '../helpers/leaks.js'
import { jsonSchemaText } from '../../src/config/json-schema.js'
import { SpawnSchema, RestartSchema, HealthCheckSchema } from '../../src/config/spawn-schema.js'
import { parseDuration } from '../../src/config/units.js'
import { SPAWN_DEFAULTS } from '../../src/spawn/index.js'
import { didYouMean, editDistance } from '../../src/config/suggest.js'

t.test('schema/proxycore.schema.json equals the generated schema (run `npm run schema`)', async (t) => {
  guardLeaks(t)
  const committed = readFileSync(new URL('../../schema/proxycore.schema.json', import.meta.url), 'utf8')
  t.equal(committed, jsonSchemaText())
})

t.test('spawn schema defaults are the manager\'s defaults', async (t) => {
  guardLeaks(t)
  const norm = (v: unknown): unknown => typeof v === 'string' && parseDuration(v) !== null && /[a-z]$/.test(v) ? parseDuration(v) : v
  const props = SpawnSchema.properties as Record<string, { default?: unknown }>
  for (const k of ['socketType', 'handoff', 'maxRequests', 'minProcs', 'maxProcs', 'maxLoadPerProc', 'idleTimeout', 'killSignal', 'stopTimeout', 'startTimeout'] as const) {
    t.equal(norm(props[k].default), SPAWN_DEFAULTS[k], k)
  }
  for (const [k, v] of Object.entries(SPAWN_DEFAULTS.restart)) t.equal(norm((RestartSchema.properties as Record<string, { default?: unknown }>)[k].default), v, `restart.${k}`)
  for (const [k, v] of Object.entries(SPAWN_DEFAULTS.healthCheck)) t.equal(norm((HealthCheckSchema.properties as Record<string, { default?: unknown }>)[k].default), v, `healthCheck.${k}`)
})

t.test('did-you-mean only for near misses', async (t) => {
  guardLeaks(t)
  t.equal(editDistance('kitten', 'sitting'), 3)
  t.equal(didYouMean('binpath', ['binPath', 'socketName']), 'binPath')
  t.equal(didYouMean('sockName', ['binPath', 'socketName']), 'socketName')
  t.equal(didYouMean('colour', ['binPath', 'socketName']), null)
})
