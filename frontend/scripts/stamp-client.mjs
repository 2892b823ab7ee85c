// Record which openapi.json the generated client was made from, so a test can tell when
// the schema changed but `npm run client` was not run.
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const digest = createHash('sha256').update(readFileSync(join(root, 'openapi.json'))).digest('hex');
writeFileSync(join(root, 'src', 'client', 'openapi.sha256'), `${digest}\n`);
console.log(`client stamped with openapi.json sha256 ${digest.slice(0, 12)}`);
