export interface SamplingHeapProfileNode {
  callFrame: { functionName: string, url: string, lineNumber: number, columnNumber?: number, scriptId?: string }
  selfSize: number
  id?: number
  children?: SamplingHeapProfileNode[]
}
export interface SurvivorSite { site: string, bytes: number, perRequest: number, share: number }
export function aggregateSurvivors (
  profile: { head: SamplingHeapProfileNode },
  opts?: { requests?: number, root?: string, depth?: number, n?: number },
): { bytes: number, perRequest: number, sites: SurvivorSite[], areas: Array<{ area: string, bytes: number, perRequest: number }> }
