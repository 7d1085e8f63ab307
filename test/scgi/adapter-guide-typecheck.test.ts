/**
 * docs/guides/writing-an-adapter.md, taken literally: its TypeScript snippets must type-check under
 * the repo's strict settings against the package entry (`proxycore` = src/index.ts), with only the
 * names a reader writes themselves (their exchange class and options type) declared around them.
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'

const here = dirname(fileURLToPath(import.meta.url))
const root = resolve(here, '../..')
const guide = readFileSync(join(root, 'docs/guides/writing-an-adapter.md'), 'utf8')

/** The ```ts blocks of the section whose heading starts with `heading`. */
function blocks (heading: string): string[] {
  const start = guide.indexOf(`\n## ${heading}`)
  if (start === -1) throw new Error(`no section "${heading}" in the guide`)
  const end = guide.indexOf('\n## ', start + 4)
  const section = guide.slice(start, end === -1 ? undefined : end)
  return [...section.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1])
}

// What the reader writes before the snippets: their options type and their per-exchange object.
const PRELUDE = `
import type { ClientContext as C_, Endpoint as E_, Exchange as X_, ResponseHandler as H_, ProxyError as P_ } from 'proxycore'
type UwsgiOptions = Record<string, never>
declare class UwsgiExchange {
  constructor (endpoint: E_, ctx: C_, ex: X_, handler: H_, done: (x: UwsgiExchange) => void)
  start (): void
  abort (err: P_): void
}
`

function typeCheck (source: string): string[] {
  const file = join(here, '__guide_snippets__.ts')
  const text = source.replaceAll("'proxycore'", "'../../src/index.js'")
  const options: ts.CompilerOptions = {
    target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext,
    lib: ['lib.es2023.d.ts'], types: ['node'], strict: true, skipLibCheck: true, noEmit: true, isolatedModules: true,
    verbatimModuleSyntax: true, esModuleInterop: true, resolveJsonModule: true, rootDir: root
  }
  const host = ts.createCompilerHost(options)
  const { getSourceFile, fileExists, readFile } = host
  host.fileExists = (f) => f === file || fileExists.call(host, f)
  host.readFile = (f) => f === file ? text : readFile.call(host, f)
  host.getSourceFile = (f, lang, ...rest) => f === file ? ts.createSourceFile(f, text, lang) : getSourceFile.call(host, f, lang, ...rest)
  const program = ts.createProgram([file], options, host)
  return ts.getPreEmitDiagnostics(program, program.getSourceFile(file))
    .map((d) => `${d.start !== undefined && d.file !== undefined ? d.file.getLineAndCharacterOfPosition(d.start).line + 1 : '?'}: TS${d.code} ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`)
}

t.test('the guide: "1. The adapter object" and "3. Registering it" type-check as written', async (t) => {
  const one = blocks('1. The adapter object')
  const three = blocks('3. Registering it')
  t.equal(one.length, 1)
  t.equal(three.length, 1)
  const source = `${one[0]}\n${PRELUDE}\n${three[0]}\nexport { proxy, registerAdapter }\n`
  const errors = typeCheck(source)
  t.same(errors, [], 'no type error', { source })
})

t.test('what docs/adapters.md offers CGI-family adapters can be named from the package entry', async (t) => {
  // buildCgiEnv(input) and CgiResponseParser#push(chunk) are public; so must their types be, or an
  // adapter cannot declare the variable it passes or keeps (`Parameters<typeof ...>` workarounds).
  const source = `
import { buildCgiEnv, CgiResponseParser, type CgiEnvInput, type CgiPushResult, type CgiHead } from 'proxycore'
export function env (input: CgiEnvInput): Record<string, string> { return buildCgiEnv(input) }
export function head (p: CgiResponseParser, chunk: Buffer): CgiHead | null {
  const r: CgiPushResult = p.push(chunk)
  return 'error' in r || !r.done ? null : r.head
}
`
  t.same(typeCheck(source), [], 'no type error', { source })
})
