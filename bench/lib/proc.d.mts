// Types for the part of proc.mjs the TypeScript tests use.
export function connectable (where: number | string): Promise<boolean>
export function freePort (): Promise<number>
export interface TreeProc { pid: number, ppid: number, comm: string, utime: number, stime: number }
export function tree (pid: number, exclude?: RegExp | null, preExec?: boolean): TreeProc[]
