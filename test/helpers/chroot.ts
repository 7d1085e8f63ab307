/**
 * A minimal root for chroot tests: the given host programs at the same paths inside, with their
 * libraries and loader (from ldd), every directory 0755 and owned by root (as `chroot` requires).
 */
import { execFileSync } from 'node:child_process'
import { chmodSync, copyFileSync, mkdirSync, realpathSync } from 'node:fs'
import { dirname, join } from 'node:path'

export function minimalRoot (dir: string, name: string, programs: readonly string[]): string {
  const root = join(dir, name)
  mkdirSync(root, { mode: 0o755 })
  chmodSync(root, 0o755)
  const copy = (host: string, inside: string): void => {
    mkdirSync(join(root, dirname(inside)), { recursive: true, mode: 0o755 })
    copyFileSync(realpathSync(host), join(root, inside))
    chmodSync(join(root, inside), 0o755)
  }
  for (const bin of programs) {
    copy(bin, bin)
    for (const m of execFileSync('ldd', [realpathSync(bin)], { encoding: 'utf8' }).matchAll(/(\/\S+) \(0x/g)) copy(m[1], m[1])
  }
  return root
}
