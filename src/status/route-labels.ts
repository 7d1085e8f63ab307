/**
 * The route labels of the status handler's own requests, and the route names that would collide
 * with them. No prom-client here: `proxycore check` (src/config/check.ts) and
 * createStatus (handler.ts) refuse the same names with the same words.
 */
import { routeNameUnicodeIssue } from '../core/compile.js'
import type { ConfigIssue } from '../core/errors.js'

/**
 * The `route` of a request the status handler answered, in the access log (`route=status`), the
 * `request:end` event and `proxycore_responses_total{route=...}`: `status` for the page, its JSON
 * and the live view, `metrics` for the metrics path. Never a config route: no backend, `upstream=-`.
 */
export const STATUS_ROUTES = { page: 'status', metrics: 'metrics' } as const

/**
 * What is wrong with route `index`'s `name`, or null; `status`: the status handler beside it
 * (`metrics`: its metrics path is served), null for none. A lone UTF-16 surrogate (`"a\ud800"` in YAML or JSON) can only be
 * U+FFFD in the UTF-8 access log, page and metrics, so two names that differ only there (`a\ud800`,
 * `a\udc00`) passed the uniqueness rule and were yet one label. A name like one of STATUS_ROUTES
 * would share that label: the route's requests and the page's (or the scrapes) one series, log
 * lines nobody can tell apart.
 */
export function routeLabelIssue (name: string, index: number, status: { metrics: boolean } | null): ConfigIssue | null {
  const path = `/routes/${index}/name`
  const unicode = routeNameUnicodeIssue(name, index)
  if (unicode !== null) return unicode
  const page = name === STATUS_ROUTES.page
  if (status === null || (!page && (name !== STATUS_ROUTES.metrics || !status.metrics))) return null
  return {
    path,
    message: `route name "${name}" is the ${page ? 'status page' : 'metrics path'}'s own label (route=${name} in the access log and in proxycore_responses_total): the route's requests and ${page ? 'the page\'s' : 'the scrapes'} would share it`,
    found: name,
    expected: page ? 'another name' : 'another name, or status.metricsPath: false',
  }
}
