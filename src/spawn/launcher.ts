/**
 * Turns a spawn's argv + clean environment into the exact exec plan.
 */
import type { ManagerOptions } from './types.js'
import type { ResolvedSpec } from './spec.js'
import type { LaunchPlan } from './process.js'

export class Launcher {
  constructor (_opts: ManagerOptions) {}

  async validate (_spec: ResolvedSpec): Promise<void> {}

  plan (spec: ResolvedSpec, argv: string[], env: Record<string, string>, cwd: string | undefined): LaunchPlan {
    return { file: argv[0], args: argv.slice(1), env, cwd: cwd ?? spec.cwd }
  }
}
