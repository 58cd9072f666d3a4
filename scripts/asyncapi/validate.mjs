// Validates an AsyncAPI document with the official parser: exits 1 on any
// error or warning (diagnostics of severity 0 or 1), printing them.
import { resolve } from 'node:path';
import { Parser, fromFile } from '@asyncapi/parser';

const file = resolve(process.argv[2]);
const { document, diagnostics } = await fromFile(new Parser(), file).parse();
const names = ['error', 'warning', 'info', 'hint'];
let bad = !document;
for (const d of diagnostics) {
  if (d.severity <= 1) bad = true;
  console.log(`${file}: ${names[d.severity]}: ${d.code} at ${d.path.join('.') || '/'}: ${d.message}`);
}
if (bad) {
  console.log(`${file}: invalid`);
  process.exit(1);
}
const messages = document.allMessages().all().map((m) => m.name());
console.log(`${file}: valid AsyncAPI ${document.version()}: ${document.allChannels().length} channels, messages ${messages.join(', ')}`);
for (const m of document.allMessages().all()) {
  const p = m.payload();
  if (p && p.properties()) console.log(`  ${m.name()}: ${Object.keys(p.properties()).join(' ')}`);
}
