/**
 * Prometheus exposition through prom-client: one Registry per proxy (two proxies in one process
 * never share series), with `collect()` callbacks that read the live counters at scrape time, so
 * the hot path pays nothing for metrics.
 *
 * Counters stay monotonic under faults. The sources are per-object counters that can vanish or
 * restart (a crashed process is replaced by one with a new id, a drained backend is dropped), so
 * every counter series passes through `Monotonic`: a value lower than the last one seen is a reset
 * and adds on top (the Prometheus `rate()` convention done on our side), and a series is only ever
 * removed with the object it describes, never lowered.
 */
import type { Histogram, LabelValues, MetricType, Registry } from 'prom-client'
import { lazy } from '../lazy.js'
import { LATENCY_BUCKETS_MS } from '../core/stats.js'
import type { RequestEndEvent } from '../core/events.js'
import type { SpawnEvents, SpawnState } from '../spawn/types.js'
import { clientStatus } from './access-log.js'
import type { StatusSnapshot, StatusTarget } from './model.js'

const SPAWN_STATES: readonly SpawnState[] = ['idle', 'waiting', 'starting', 'running', 'backoff', 'failed', 'stopping', 'stopped']

/** Running totals per series that never decrease, whatever the source does. */
class Monotonic {
  private readonly series = new Map<string, { last: number, total: number }>()
  private seen = new Set<string>()

  total (key: string, raw: number): number {
    this.seen.add(key)
    const s = this.series.get(key)
    if (s === undefined) { this.series.set(key, { last: raw, total: raw }); return raw }
    s.total += raw >= s.last ? raw - s.last : raw
    s.last = raw
    return s.total
  }

  /** Forget series not reported in this scrape (their object is gone). */
  sweep (): void {
    for (const k of this.series.keys()) if (!this.seen.has(k)) this.series.delete(k)
    this.seen = new Set()
  }
}

/** A histogram whose buckets are the route's own fixed latency buckets (no double bookkeeping). */
const LATENCY = { name: 'proxycore_route_request_duration_seconds', help: 'Time from arrival to the end of the response, per route.' }

const prom = lazy<typeof import('prom-client')>('prom-client')

/** prom-client loads with the first status page, so the class is made then (once). */
let RouteLatencyClass: ReturnType<typeof routeLatencyClass> | null = null

function routeLatencyClass (Base: typeof Histogram) {
  return class RouteLatency extends Base<'route'> {
    constructor (registry: Registry, private readonly snap: () => StatusTarget) {
      super({ ...LATENCY, labelNames: ['route'], buckets: LATENCY_BUCKETS_MS.map((b) => b / 1000), registers: [registry] })
    }

    private values (): Array<{ metricName: string, labels: LabelValues<string>, value: number }> {
      const out: Array<{ metricName: string, labels: LabelValues<string>, value: number }> = []
      for (const r of this.snap().routes) {
        let cumulative = 0
        LATENCY_BUCKETS_MS.forEach((b, i) => {
          cumulative += r.stats.latency[i]
          out.push({ metricName: `${LATENCY.name}_bucket`, labels: { route: r.name, le: b / 1000 }, value: cumulative })
        })
        cumulative += r.stats.latency[LATENCY_BUCKETS_MS.length]
        out.push({ metricName: `${LATENCY.name}_bucket`, labels: { route: r.name, le: '+Inf' }, value: cumulative })
        out.push({ metricName: `${LATENCY.name}_sum`, labels: { route: r.name }, value: r.stats.latencySumMs / 1000 })
        out.push({ metricName: `${LATENCY.name}_count`, labels: { route: r.name }, value: cumulative })
      }
      return out
    }

    override async get (): ReturnType<Histogram<'route'>['get']> {
      // prom-client's d.ts declares `type` as a numeric enum the runtime does not export; the runtime uses the string.
      return { ...LATENCY, type: 'histogram' as unknown as MetricType, aggregator: 'sum', collect: () => {}, values: this.values() }
    }

    /** What the Registry formats (prom-client prefers it over `get()` when present). */
    async getForPromString (): ReturnType<Histogram<'route'>['get']> {
      return this.get()
    }
  }
}

export interface Metrics {
  readonly registry: Registry
  /** Text exposition format (content type in `registry.contentType`). */
  render (): Promise<string>
  close (): void
}

export function createMetrics (proxy: StatusTarget, snapshot: () => StatusSnapshot): Metrics {
  const { Counter, Gauge, Registry } = prom()
  const RouteLatency = (RouteLatencyClass ??= routeLatencyClass(prom().Histogram))
  const registry = new Registry()
  const mono = new Monotonic()
  let current: StatusSnapshot | null = null
  // One snapshot per scrape, shared by every collect() of that scrape.
  const snap = (): StatusSnapshot => (current ??= snapshot())

  const counter = (name: string, help: string, labelNames: string[], rows: (s: StatusSnapshot) => Array<[LabelValues<string>, number]>): void => {
    new Counter({
      name, help, labelNames, registers: [registry],
      collect () {
        this.reset()
        for (const [labels, raw] of rows(snap())) this.inc(labels, mono.total(`${name}${JSON.stringify(labels)}`, raw))
      },
    })
  }
  const gauge = (name: string, help: string, labelNames: string[], rows: (s: StatusSnapshot) => Array<[LabelValues<string>, number]>): void => {
    new Gauge({
      name, help, labelNames, registers: [registry],
      collect () {
        this.reset()
        for (const [labels, v] of rows(snap())) this.set(labels, v)
      },
    })
  }

  gauge('proxycore_inflight', 'Exchanges in flight.', [], (s) => [[{}, s.inflight]])
  counter('proxycore_route_requests_total', 'Requests routed, per route.', ['route'], (s) => s.routes.map((r) => [{ route: r.name }, r.requests]))
  counter('proxycore_route_errors_total', 'Requests that ended in an error (client aborts excluded).', ['route'], (s) => s.routes.map((r) => [{ route: r.name }, r.errors]))
  counter('proxycore_route_dropped_total', 'Requests refused by admission (queue full or queue timeout).', ['route'], (s) => s.routes.map((r) => [{ route: r.name }, r.dropped]))
  gauge('proxycore_route_active', 'Exchanges holding an admission slot.', ['route'], (s) => s.routes.map((r) => [{ route: r.name }, r.active]))
  gauge('proxycore_route_queued', 'Exchanges waiting for an admission slot.', ['route'], (s) => s.routes.map((r) => [{ route: r.name }, r.queued]))
  gauge('proxycore_route_available_ratio', 'Usable backends (or ready processes) over capacity, 0..1.', ['route'], (s) => s.routes.map((r) => [{ route: r.name }, r.capacity === 0 ? 0 : r.available / r.capacity]))
  new RouteLatency(registry, () => proxy)

  const backendRows = (s: StatusSnapshot, pick: (b: StatusSnapshot['routes'][number]['backends'][number]) => number): Array<[LabelValues<string>, number]> =>
    s.routes.flatMap((r) => r.backends.map((b): [LabelValues<string>, number] => [{ route: r.name, backend: b.id, source: b.source }, pick(b)]))
  counter('proxycore_backend_requests_total', 'Exchanges dispatched to a backend.', ['route', 'backend', 'source'], (s) => backendRows(s, (b) => b.requests))
  counter('proxycore_backend_failures_total', 'Failed connects to a backend.', ['route', 'backend', 'source'], (s) => backendRows(s, (b) => b.failures))
  gauge('proxycore_backend_inflight', 'Exchanges in flight on a backend.', ['route', 'backend', 'source'], (s) => backendRows(s, (b) => b.inflight))
  gauge('proxycore_backend_up', '1 when the backend is routable, 0 when disabled or draining.', ['route', 'backend', 'source'], (s) => backendRows(s, (b) => (b.state === 'up' ? 1 : 0)))

  gauge('proxycore_spawn_state', '1 for the state the spawn is in, 0 for the others.', ['spawn', 'state'], (s) =>
    s.spawns.flatMap((sp) => SPAWN_STATES.map((st): [LabelValues<string>, number] => [{ spawn: sp.name, state: st }, sp.state === st ? 1 : 0])))
  gauge('proxycore_spawn_processes', 'Processes of a spawn: alive, ready, idle, max.', ['spawn', 'kind'], (s) =>
    s.spawns.flatMap((sp) => [['alive', sp.alive], ['ready', sp.ready], ['idle', sp.idle], ...(sp.max === null ? [] : [['max', sp.max]])]
      .map(([kind, n]): [LabelValues<string>, number] => [{ spawn: sp.name, kind }, n as number])))
  // An info series (value 1), only for pipe spawns: how their CGI programs start.
  gauge('proxycore_spawn_launcher_info', 'How a pipe spawn starts its CGI programs: the fork server (compiled or perl) or Node\'s spawn() (direct).', ['spawn', 'launcher', 'fork_server'], (s) =>
    s.spawns.flatMap((sp): Array<[LabelValues<string>, number]> =>
      sp.launcher == null ? [] : [[{ spawn: sp.name, launcher: sp.launcher, fork_server: sp.forkServer ?? 'none' }, 1]]))
  const procRows = (s: StatusSnapshot, pick: (p: StatusSnapshot['spawns'][number]['processes'][number]) => number | null): Array<[LabelValues<string>, number]> =>
    s.spawns.flatMap((sp) => sp.processes.flatMap((p): Array<[LabelValues<string>, number]> => {
      const v = pick(p)
      return v === null || p.pid === null ? [] : [[{ spawn: sp.name, id: p.id, pid: p.pid }, v]]
    }))
  counter('proxycore_process_requests_total', 'Requests handed to a spawned process.', ['spawn', 'id', 'pid'], (s) => procRows(s, (p) => p.requests))
  counter('proxycore_process_cpu_seconds_total', 'User+system CPU of a spawned process and its reaped children.', ['spawn', 'id', 'pid'], (s) => procRows(s, (p) => p.cpuSeconds))
  gauge('proxycore_process_resident_memory_bytes', 'Resident set size of a spawned process.', ['spawn', 'id', 'pid'], (s) => procRows(s, (p) => p.rssBytes))
  gauge('proxycore_process_inflight', 'Exchanges in flight on a spawned process.', ['spawn', 'id', 'pid'], (s) => procRows(s, (p) => p.inflight))

  // Event-fed counters: monotonic by construction.
  const responses = new Counter({ name: 'proxycore_responses_total', help: 'Responses sent, per route and status code (499 = client went away).', labelNames: ['route', 'status'], registers: [registry] })
  const failures = new Counter({ name: 'proxycore_request_failures_total', help: 'Exchanges that failed, per route and stable error code.', labelNames: ['route', 'code'], registers: [registry] })
  const exits = new Counter({ name: 'proxycore_spawn_exits_total', help: 'Spawned processes that exited, expected (stop, recycle) or not (crash).', labelNames: ['spawn', 'expected'], registers: [registry] })
  const restarts = new Counter({ name: 'proxycore_spawn_restarts_total', help: 'Crash restarts scheduled by the supervisor.', labelNames: ['spawn'], registers: [registry] })
  const onEnd = (e: RequestEndEvent): void => {
    responses.inc({ route: e.route, status: clientStatus(e) })
    if (e.error !== null) failures.inc({ route: e.route, code: e.error })
  }
  const onExit = (e: SpawnEvents['exit'][0]): void => { exits.inc({ spawn: e.spawn, expected: String(e.expected) }) }
  const onRestart = (e: SpawnEvents['restart'][0]): void => { restarts.inc({ spawn: e.spawn }) }
  proxy.events.on('request:end', onEnd)
  proxy.spawns?.on('exit', onExit)
  proxy.spawns?.on('restart', onRestart)

  return {
    registry,
    async render () {
      current = null
      try {
        return await registry.metrics()
      } finally {
        current = null
        mono.sweep()
      }
    },
    close () {
      proxy.events.off('request:end', onEnd)
      proxy.spawns?.off('exit', onExit)
      proxy.spawns?.off('restart', onRestart)
    },
  }
}
