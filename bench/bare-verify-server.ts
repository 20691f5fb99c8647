/**
 * The baseline: a bare node:http server that reads a JSON body and answers a verifyKey-shaped
 * response. What any verification service costs at the least on this machine.
 */
import { createServer } from 'node:http';

const ANSWER = JSON.stringify({
  data: {
    verifyKey: { valid: true, code: 'VALID', keyId: '00000000-0000-4000-8000-000000000000', ownerId: '00000000-0000-4000-8000-000000000001', permissions: [], remaining: null },
  },
});

createServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"status":"ok"}');
    return;
  }
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
    res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(ANSWER) });
    res.end(ANSWER);
  });
}).listen(Number(process.env.PORT), process.env.HOST ?? '127.0.0.1');
