/**
 * Imported first by main.ts, before anything else loads. Until `serve` installs its own handlers
 * (after every import and the first read of the config: a few hundred milliseconds), node's
 * default actions apply: SIGHUP, SIGTERM and SIGINT end the process (a `systemctl reload` sent
 * right after the start killed proxycore; a supervisor's immediate stop saw exit 143 and no log
 * line). For `serve`, such a signal that early is remembered instead: serve reloads once it is up
 * after a HUP, and after a TERM/INT it starts nothing, logs `stopped` and exits 0. Other commands
 * keep the defaults (a terminal's hangup or Ctrl-C ends them). Before node runs this module
 * (its own start-up, some tens of milliseconds) nothing can catch a signal.
 */
let seen = false
let stop: NodeJS.Signals | null = null
const remember = (): void => { seen = true }
const rememberStop = (signal: NodeJS.Signals): void => { stop ??= signal }
// SIGUSR1 (reopen the access log) that early has no file to reopen yet; without a listener, node
// would open its inspector on 127.0.0.1:9229 instead.
const ignore = (): void => {}
// SIGHUP last: whoever sees SIGHUP caught (SigCgt in /proc) may rely on the others being handled.
if (process.argv[2] === 'serve') {
  process.on('SIGUSR1', ignore)
  process.on('SIGTERM', rememberStop)
  process.on('SIGINT', rememberStop)
  process.on('SIGHUP', remember)
}

/** Stop remembering (serve's own handlers are installed) and say whether a HUP came meanwhile. */
export function takeEarlyHup (): boolean {
  process.off('SIGHUP', remember)
  process.off('SIGUSR1', ignore)
  return seen
}

/** Stop remembering (serve's own handlers are installed); the first SIGTERM/SIGINT that came meanwhile. */
export function takeEarlyStop (): NodeJS.Signals | null {
  process.off('SIGTERM', rememberStop)
  process.off('SIGINT', rememberStop)
  return stop
}
