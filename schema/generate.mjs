// Writes schema/proxycore.schema.json from the built TypeBox schema (run via `npm run schema`).
import { writeFileSync } from 'node:fs'
import { jsonSchemaText } from '../dist/config/json-schema.js'

writeFileSync(new URL('./proxycore.schema.json', import.meta.url), jsonSchemaText())
