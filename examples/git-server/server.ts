/**
 * A git smart-HTTP server: proxycore in front of `git http-backend`, from `proxycore.yaml`.
 *
 *   GIT_PROJECT_ROOT=/srv/git node --import @tapjs/typescript/import examples/git-server/server.ts
 *   git clone http://127.0.0.1:8080/git/<repo>.git
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { createProxy, type Logger } from '../../src/index.js'
import { loadConfigOrThrow } from '../../src/config/load.js'

export const CONFIG_FILE = fileURLToPath(new URL('./proxycore.yaml', import.meta.url))

export interface GitServer {
  readonly url: string
  readonly server: Server
  close (): Promise<void>
}

/** Load the config (with `env` for its `${VAR}`s), start the spawn and listen. */
export async function startGitServer (opts: { env: NodeJS.ProcessEnv, logger?: Logger }): Promise<GitServer> {
  const { config } = await loadConfigOrThrow(CONFIG_FILE, { env: opts.env })
  const { listen, ...rest } = config
  const proxy = await createProxy({ ...rest, ...(opts.logger !== undefined ? { logger: opts.logger } : {}) })
  const server = createServer(proxy.handler)
  const [host, port] = splitHostPort(typeof listen === 'string' ? listen : '127.0.0.1:8080')
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, host, resolve)
    })
  } catch (err) {
    await proxy.close()
    throw err
  }
  const addr = server.address() as AddressInfo
  return {
    url: `http://${addr.address}:${addr.port}`,
    server,
    async close () {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await proxy.close()
    }
  }
}

function splitHostPort (listen: string): [string, number] {
  const i = listen.lastIndexOf(':')
  return [listen.slice(0, i).replace(/^\[|\]$/g, ''), Number(listen.slice(i + 1))]
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const git = await startGitServer({ env: process.env })
  process.stdout.write(`git server on ${git.url}/git/<repo>.git (repositories under ${process.env.GIT_PROJECT_ROOT ?? ''})\n`)
  const stop = (): void => { void git.close().then(() => process.exit(0)) }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
}
