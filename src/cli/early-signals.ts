/**
 * Imported first by main.ts, before anything else loads. Until `serve` installs its own handlers
 * (after every import and the first read of the config: a few hundred milliseconds), node's
 * default action for SIGHUP applies, which ends the process: a `systemctl reload` sent right after
 * the start killed proxycore. For `serve`, a HUP that early is remembered instead, and serve
 * reloads once it is up; other commands keep the default (a terminal's hangup ends them).
 */
let seen = false
const remember = (): void => { seen = true }
// SIGUSR1 (reopen the access log) that early has no file to reopen yet; without a listener, node
// would open its inspector on 127.0.0.1:9229 instead.
const ignore = (): void => {}
// SIGUSR1 first: whoever sees SIGHUP caught (SigCgt in /proc) may rely on both being handled.
if (process.argv[2] === 'serve') { process.on('SIGUSR1', ignore); process.on('SIGHUP', remember) }

/** Stop remembering (serve's own handler is installed) and say whether a HUP came meanwhile. */
export function takeEarlyHup (): boolean {
  process.off('SIGHUP', remember)
  process.off('SIGUSR1', ignore)
  return seen
}
