/**
 * A protocol adapter scripted by a test: no backend, no connection. `dispatch` answers each
 * exchange through the handler and calls `done()` once it is over (before its last call, as a real
 * client leaves `inflight` before `onEnd`). Built on the public adapter API only.
 */
import type { BackendClient, Exchange, ProtocolAdapter, ResponseHandler } from '../../src/index.js'

export function scriptedAdapter (name: string, dispatch: (ex: Exchange, h: ResponseHandler, done: () => void) => void): ProtocolAdapter {
  return {
    name,
    capabilities: { keepAlive: false, multiplex: true, upgrade: false, cgiEnv: false, needsContentLength: false, perRequestProcess: false },
    parseOptions: () => ({}),
    createClient (): BackendClient {
      let inflight = 0
      return {
        dispatch (ex: Exchange, h: ResponseHandler) {
          inflight++
          dispatch(ex, h, () => { inflight-- })
        },
        get inflight () { return inflight },
        close: async () => {},
        destroy () {},
      }
    },
  }
}
