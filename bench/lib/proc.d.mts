// Types for the part of proc.mjs the TypeScript tests use.
export function connectable (where: number | string): Promise<boolean>
