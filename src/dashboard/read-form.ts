import type { IncomingMessage } from 'node:http';

/** A form post is a few ids and a token; anything much larger is not one of ours. */
const MAX_FORM_BYTES = 256 * 1024;

export class FormTooLargeError extends Error {}

/**
 * The fields of an urlencoded form post. A framework that already parsed the body (Express's
 * urlencoded(), Fastify's formbody) leaves the stream drained and the fields on `request.body`;
 * those are used instead of waiting for a stream that will never end.
 */
export async function readForm(request: IncomingMessage): Promise<URLSearchParams> {
  const parsed = (request as IncomingMessage & { body?: unknown }).body;
  if (request.readableEnded && parsed !== null && typeof parsed === 'object') {
    const fields = new URLSearchParams();
    for (const [name, value] of Object.entries(parsed)) {
      for (const item of Array.isArray(value) ? value : [value]) if (typeof item === 'string') fields.append(name, item);
    }
    return fields;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > MAX_FORM_BYTES) throw new FormTooLargeError(`form larger than ${MAX_FORM_BYTES} bytes`);
    chunks.push(chunk as Buffer);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}
