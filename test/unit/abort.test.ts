/** watchAbort / unwatchAbort / isAborted: the core's cheap hook when offered, the signal otherwise. */
import t from 'tap'
import { isAborted, unwatchAbort, watchAbort } from '../../src/index.js'

t.test('an exchange with only a signal (a framework\'s own)', async (t) => {
  const ac = new AbortController()
  const ex = { signal: ac.signal }
  let calls = 0
  const fn = (): void => { calls++ }
  t.notOk(isAborted(ex))
  watchAbort(ex, fn)
  ac.abort()
  t.ok(isAborted(ex))
  t.equal(calls, 1, 'the listener ran')
  const ac2 = new AbortController()
  const ex2 = { signal: ac2.signal }
  watchAbort(ex2, fn)
  unwatchAbort(ex2, fn)
  ac2.abort()
  t.equal(calls, 1, 'an unwatched exchange calls nothing')
})

t.test('an exchange with the core\'s hook: no signal is created', async (t) => {
  let handler: (() => void) | null = null
  let signalRead = false
  const ex = {
    aborted: false,
    setAbortHandler (fn: (() => void) | null) { handler = fn },
    get signal (): AbortSignal { signalRead = true; return new AbortController().signal },
  }
  const fn = (): void => {}
  t.notOk(isAborted(ex))
  watchAbort(ex, fn)
  t.equal(handler, fn, 'the hook holds the function')
  unwatchAbort(ex, fn)
  t.equal(handler, null, 'and lets go of it')
  ex.aborted = true
  t.ok(isAborted(ex))
  t.notOk(signalRead, 'the signal was never touched')
})
