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

/**
 * Running totals per series that never decrease, whatever the source does. A series is either
 * `scoped` to the proxy (routes, their backends and latency: objects a new `createProxy` makes
 * afresh, so after a hand-over to a reload's status their first value is a restart from zero, added
 * in full) or not (spawned processes: the same objects on both sides of a reload).
 */
export class Monotonic {
  private readonly series = new Map<string, { last: number, total: number, epoch: number }>()
  private seen = new Set<string>()
  /** Bumped by a hand-over: scoped series of the previous proxy restart from zero. */
  epoch = 0

  total (key: string, raw: number, scoped = false): number {
    this.seen.add(key)
    const s = this.series.get(key)
    if (s === undefined) { this.series.set(key, { last: raw, total: raw, epoch: this.epoch }); return raw }
    s.total += scoped && s.epoch !== this.epoch ? raw : raw >= s.last ? raw - s.last : raw
    s.last = raw
    s.epoch = this.epoch
    return s.total
  }

  /** Add to a series' total without a new raw value (a drained request of a handed-over proxy). */
  add (key: string, delta: number): void {
    const s = this.series.get(key)
    if (s !== undefined) s.total += delta
  }

  /** Forget series not reported in this scrape (their object is gone). */
  sweep (): void {
    for (const k of this.series.keys()) if (!this.seen.has(k)) this.series.delete(k)
    this.seen = new Set()
  }
}

/** Event-fed counts (responses, failures, exits, restarts): label set -> count. */
export class EventCounts {
  private readonly counts = new Map<string, { labels: LabelValues<string>, n: number }>()
  inc (labels: LabelValues<string>): void {
    const key = JSON.stringify(labels)
    const c = this.counts.get(key)
    if (c === undefined) this.counts.set(key, { labels, n: 1 })
    else c.n++
  }

  rows (): Array<[LabelValues<string>, number]> {
    return [...this.counts.values()].map((c) => [c.labels, c.n])
  }
}

/**
 * What a reload's status takes over from the one it replaces (`createStatus({ previous })`), so no
 * counter series goes down when the gateway swaps in a new proxy: the running totals and the
 * event-fed counts.
 */
export interface MetricsCarry {
  readonly mono: Monotonic
  readonly events: { responses: EventCounts, failures: EventCounts, exits: EventCounts, restarts: EventCounts }
}

/** A histogram whose buckets are the route's own fixed latency buckets (no double bookkeeping). */
const LATENCY = { name: 'proxycore_route_request_duration_seconds', help: 'Time from arrival to the end of the response, per route.' }

const prom = lazy<typeof import('prom-client')>('prom-client')

/** prom-client loads with the first status page, so the class is made then (once). */
let RouteLatencyClass: ReturnType<typeof routeLatencyClass> | null = null

function routeLatencyClass (Base: typeof Histogram) {
  return class RouteLatency extends Base<'route'> {
    constructor (registry: Registry, private readonly snap: () => StatusTarget, private readonly mono: Monotonic) {
      super({ ...LATENCY, labelNames: ['route'], buckets: LATENCY_BUCKETS_MS.map((b) => b / 1000), registers: [registry] })
    }

    /** The series with their totals; with `raw`, only the raw values into it (Monotonic untouched). */
    private values (raw?: Map<string, number>): Array<{ metricName: string, labels: LabelValues<string>, value: number }> {
      const out: Array<{ metricName: string, labels: LabelValues<string>, value: number }> = []
      // Buckets, sum and count are counters too: through Monotonic, so a reload does not lower them.
      const push = (metricName: string, labels: LabelValues<string>, value: number): void => {
        const key = `${metricName}${JSON.stringify(labels)}`
        if (raw !== undefined) raw.set(key, value)
        else out.push({ metricName, labels, value: this.mono.total(key, value, true) })
      }
      for (const r of this.snap().routes) {
        let cumulative = 0
        LATENCY_BUCKETS_MS.forEach((b, i) => {
          cumulative += r.stats.latency[i]
          push(`${LATENCY.name}_bucket`, { route: r.name, le: b / 1000 }, cumulative)
        })
        cumulative += r.stats.latency[LATENCY_BUCKETS_MS.length]
        push(`${LATENCY.name}_bucket`, { route: r.name, le: '+Inf' }, cumulative)
        push(`${LATENCY.name}_sum`, { route: r.name }, r.stats.latencySumMs / 1000)
        push(`${LATENCY.name}_count`, { route: r.name }, cumulative)
      }
      return out
    }

    /** The raw values of every series, without a scrape (a hand-over's readings). */
    read (out: Map<string, number>): void { this.values(out) }

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
  /**
   * Hand the running totals over to the metrics of the proxy that replaces this one (a reload);
   * this one stops counting spawn events (the new one sees the same spawns) and counts its own
   * requests still draining into the counts handed over; the new one continues every series from
   * where it was.
   */
  handOver (): MetricsCarry
  close (): void
}

export function createMetrics (proxy: StatusTarget, snapshot: () => StatusSnapshot, carry?: MetricsCarry): Metrics {
  const { Counter, Gauge, Registry } = prom()
  const RouteLatency = (RouteLatencyClass ??= routeLatencyClass(prom().Histogram))
  const registry = new Registry()
  const mono = carry?.mono ?? new Monotonic()
  // Series of this proxy's routes and backends start from zero: a hand-over adds them on top.
  if (carry !== undefined) mono.epoch++
  const ev = carry?.events ?? { responses: new EventCounts(), failures: new EventCounts(), exits: new EventCounts(), restarts: new EventCounts() }
  let current: StatusSnapshot | null = null
  // One snapshot per scrape, shared by every collect() of that scrape.
  const snap = (): StatusSnapshot => (current ??= snapshot())

  // Readers of the counters scoped to this proxy's live objects (series key -> raw value): for a
  // last reading at hand-over, and for what its draining requests add after it.
  const readers: Array<(out: Map<string, number>) => void> = []
  const counter = (name: string, help: string, labelNames: string[], rows: (s: StatusSnapshot) => Array<[LabelValues<string>, number]>, scoped = true): void => {
    if (scoped) readers.push((out) => { for (const [labels, raw] of rows(snap())) out.set(`${name}${JSON.stringify(labels)}`, raw) })
    new Counter({
      name, help, labelNames, registers: [registry],
      collect () {
        this.reset()
        for (const [labels, raw] of rows(snap())) this.inc(labels, mono.total(`${name}${JSON.stringify(labels)}`, raw, scoped))
      },
    })
  }
  // `known`: label sets that read 0 before their first event (every spawn), so that Prometheus'
  // increase() and rate() count that first event: a series born at 1 has no earlier sample.
  const eventCounter = (name: string, help: string, labelNames: string[], counts: EventCounts, known?: (s: StatusSnapshot) => Array<LabelValues<string>>): void => {
    new Counter({
      name, help, labelNames, registers: [registry],
      collect () {
        this.reset()
        for (const [labels, n] of counts.rows()) this.inc(labels, n)
        if (known !== undefined) for (const labels of known(snap())) this.inc(labels, 0)
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
  const latency = new RouteLatency(registry, () => proxy, mono)
  readers.push((out) => { latency.read(out) })

  const backendRows = (s: StatusSnapshot, pick: (b: StatusSnapshot['routes'][number]['backends'][number]) => number): Array<[LabelValues<string>, number]> =>
    s.routes.flatMap((r) => r.backends.map((b): [LabelValues<string>, number] => [{ route: r.name, backend: b.id, source: b.source }, pick(b)]))
  counter('proxycore_backend_requests_total', 'Exchanges dispatched to a backend.', ['route', 'backend', 'source'], (s) => backendRows(s, (b) => b.requests))
  counter('proxycore_backend_failures_total', 'Failed connects to a backend.', ['route', 'backend', 'source'], (s) => backendRows(s, (b) => b.failures))
  gauge('proxycore_backend_inflight', 'Exchanges in flight on a backend.', ['route', 'backend', 'source'], (s) => backendRows(s, (b) => b.inflight))
  gauge('proxycore_backend_up', '1 when the backend is routable, 0 when disabled or draining.', ['route', 'backend', 'source'], (s) => backendRows(s, (b) => (b.state === 'up' ? 1 : 0)))

  gauge('proxycore_spawn_state', '1 for the state the spawn is in, 0 for the others.', ['spawn', 'state'], (s) =>
    s.spawns.flatMap((sp) => SPAWN_STATES.map((st): [LabelValues<string>, number] => [{ spawn: sp.name, state: st }, sp.state === st ? 1 : 0])))
  // ready counts processes in rotation only; standby and held ones (recycling) are up but not in it.
  gauge('proxycore_spawn_processes', 'Processes of a spawn: alive, ready (in rotation), idle, standby and held (up, out of rotation by recycling), max.', ['spawn', 'kind'], (s) =>
    s.spawns.flatMap((sp) => [['alive', sp.alive], ['ready', sp.ready], ['idle', sp.idle], ['standby', sp.standby], ['held', sp.held], ...(sp.max === null ? [] : [['max', sp.max]])]
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
  // Processes outlive a reload (the same managers): not scoped to this proxy.
  counter('proxycore_process_requests_total', 'Requests handed to a spawned process.', ['spawn', 'id', 'pid'], (s) => procRows(s, (p) => p.requests), false)
  counter('proxycore_process_cpu_seconds_total', 'User+system CPU of a spawned process and its reaped children.', ['spawn', 'id', 'pid'], (s) => procRows(s, (p) => p.cpuSeconds), false)
  gauge('proxycore_process_resident_memory_bytes', 'Resident set size of a spawned process.', ['spawn', 'id', 'pid'], (s) => procRows(s, (p) => p.rssBytes))
  gauge('proxycore_process_inflight', 'Exchanges in flight on a spawned process.', ['spawn', 'id', 'pid'], (s) => procRows(s, (p) => p.inflight))

  // Event-fed counters: monotonic by construction, and handed over on reload.
  eventCounter('proxycore_responses_total', 'Responses sent, per route and status code (499 = client went away).', ['route', 'status'], ev.responses)
  eventCounter('proxycore_request_failures_total', 'Exchanges that failed, per route and stable error code.', ['route', 'code'], ev.failures)
  eventCounter('proxycore_spawn_exits_total', 'Spawned processes that exited, expected (stop, recycle) or not (crash).', ['spawn', 'expected'], ev.exits,
    (s) => s.spawns.flatMap((sp) => [{ spawn: sp.name, expected: 'true' }, { spawn: sp.name, expected: 'false' }]))
  eventCounter('proxycore_spawn_restarts_total', 'Crash restarts scheduled by the supervisor.', ['spawn'], ev.restarts, (s) => s.spawns.map((sp) => ({ spawn: sp.name })))
  const reading = (): Map<string, number> => {
    current = null
    const out = new Map<string, number>()
    for (const read of readers) read(out)
    current = null
    return out
  }
  // After a hand-over: what the scoped counters read when last looked at. A request of this proxy
  // that ends while it drains adds its difference to the running totals the new one continues.
  let handedAt: Map<string, number> | null = null
  let folding = false
  const foldDrained = (): void => {
    folding = false
    if (handedAt === null) return
    const now = reading()
    for (const [key, raw] of now) {
      const d = raw - (handedAt.get(key) ?? 0)
      if (d > 0) mono.add(key, d)
    }
    handedAt = now
  }
  const onEnd = (e: RequestEndEvent): void => {
    ev.responses.inc({ route: e.route, status: clientStatus(e) })
    if (e.error !== null) ev.failures.inc({ route: e.route, code: e.error })
    // The route's counters may be updated after the event: read them once the turn is over.
    if (handedAt !== null && !folding) { folding = true; setImmediate(foldDrained) }
  }
  const onExit = (e: SpawnEvents['exit'][0]): void => { ev.exits.inc({ spawn: e.spawn, expected: String(e.expected) }) }
  const onRestart = (e: SpawnEvents['restart'][0]): void => { ev.restarts.inc({ spawn: e.spawn }) }
  proxy.events.on('request:end', onEnd)
  proxy.spawns?.on('exit', onExit)
  proxy.spawns?.on('restart', onRestart)
  const stopSpawns = (): void => {
    proxy.spawns?.off('exit', onExit)
    proxy.spawns?.off('restart', onRestart)
  }

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
    handOver () {
      // The spawn managers are shared with the new proxy's status: stop now, or exits count twice.
      // This proxy's own requests still draining go on counting, into the counts handed over.
      stopSpawns()
      // Scoped series are read only at a scrape: take one last reading now, or what this proxy
      // counted since the last scrape would be lost (the new proxy's series start from zero).
      const raw = reading()
      for (const [key, value] of raw) mono.total(key, value, true)
      handedAt = raw
      return { mono, events: ev }
    },
    close () {
      stopSpawns()
      // Handed over: its requests still draining go on counting into the totals handed over, until
      // this proxy is gone (its events end with it); closing the status page must not lose them.
      if (handedAt === null) proxy.events.off('request:end', onEnd)
    },
  }
}
