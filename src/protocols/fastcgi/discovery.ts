/**
 * FastCGI 1.0 §4.1 FCGI_GET_VALUES: ask a backend how many connections and requests it takes and
 * whether it multiplexes. Done once per client, on a dedicated connection: php accepts GET_VALUES
 * only as the first record of a connection and closes it after answering (RELIABILITY §2.11).
 * A backend that does not answer in time gets the conservative defaults; discovery never fails a
 * request by itself — only a connect failure does.
 */
import type { Socket } from 'node:net'
import { ProxyError } from '../../core/errors.js'
import { encodeGetValues } from './codec.js'
import { RecordDecoder } from './decoder.js'

export interface BackendValues {
  /** FCGI_MAX_CONNS: concurrent transport connections the application accepts. */
  maxConns: number | null
  /** FCGI_MAX_REQS: concurrent requests the application accepts. */
  maxReqs: number | null
  /** FCGI_MPXS_CONNS: "1" when it multiplexes connections. */
  mpxsConns: boolean
  /** Whether the backend answered at all. */
  answered: boolean
}

export const NO_ANSWER: BackendValues = Object.freeze({ maxConns: null, maxReqs: null, mpxsConns: false, answered: false })

const NAMES = ['FCGI_MAX_CONNS', 'FCGI_MAX_REQS', 'FCGI_MPXS_CONNS'] as const

function positive (v: string | undefined): number | null {
  if (v === undefined || !/^\d{1,9}$/.test(v)) return null
  const n = Number(v)
  return n > 0 ? n : null
}

export function valuesFrom (map: Map<string, string>): BackendValues {
  return {
    maxConns: positive(map.get('FCGI_MAX_CONNS')),
    maxReqs: positive(map.get('FCGI_MAX_REQS')),
    mpxsConns: map.get('FCGI_MPXS_CONNS') === '1',
    answered: true,
  }
}

/**
 * Query `socket` (freshly connected, nothing sent yet) and close it. Resolves with the answer, or
 * with NO_ANSWER after `timeoutMs`, a protocol error or an early close.
 */
export function queryValues (socket: Socket, timeoutMs: number): Promise<BackendValues> {
  return new Promise((resolve) => {
    let done = false
    const finish = (v: BackendValues): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      resolve(v)
    }
    const ignore = (): void => {}
    const decoder = new RecordDecoder({
      accepts: () => false,
      stdout: () => true,
      stdoutEnd: ignore,
      stderr: ignore,
      stderrEnd: ignore,
      endRequest: ignore,
      values: (map) => finish(valuesFrom(map)),
      unknownType: () => finish(NO_ANSWER),
      error: (_err: ProxyError) => finish(NO_ANSWER),
    })
    const timer = setTimeout(() => finish(NO_ANSWER), timeoutMs)
    timer.unref()
    socket.on('data', (chunk: Buffer) => decoder.write(chunk))
    socket.on('error', () => finish(NO_ANSWER))
    socket.on('close', () => finish(NO_ANSWER))
    socket.write(encodeGetValues(NAMES))
  })
}
