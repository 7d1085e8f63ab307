/**
 * The published JSON Schema for editors (`schema/proxycore.schema.json`), generated from the same
 * TypeBox schema that validates at runtime. `npm run schema` writes it; a test keeps the committed
 * file equal to this output.
 */
import { OperatorConfigSchema } from './schema.js'

export const SCHEMA_ID = 'https://proxycore.dev/schema/proxycore.schema.json'

export function jsonSchemaText (): string {
  // JSON.stringify drops TypeBox's symbol-keyed metadata, leaving plain draft-07 JSON Schema.
  const schema = { $schema: 'http://json-schema.org/draft-07/schema#', $id: SCHEMA_ID, ...JSON.parse(JSON.stringify(OperatorConfigSchema)) as object }
  return `${JSON.stringify(schema, null, 2)}\n`
}
