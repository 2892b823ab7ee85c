import { describe, expect, it } from 'vitest';
import { ApiError, toApiError, unwrap, validationFields } from './errors';

const response = (status: number) => new Response(null, { status });

describe('toApiError', () => {
  it('keeps the server code and sentence', () => {
    const error = toApiError({ code: 'unsupported_format', message: 'Unsupported file.' }, response(415));
    expect(error).toBeInstanceOf(ApiError);
    expect(error.status).toBe(415);
    expect(error.code).toBe('unsupported_format');
    expect(error.message).toBe('Unsupported file.');
  });

  it('turns FastAPI validation details into field messages', () => {
    const body = {
      detail: [
        { loc: ['body', 'email'], msg: 'Value error, not an email' },
        { loc: ['body', 'password'], msg: 'String should have at least 8 characters' },
      ],
    };
    const error = toApiError(body, response(422));
    expect(error.code).toBe('validation_error');
    expect(error.fields).toEqual({
      email: 'not an email',
      password: 'String should have at least 8 characters',
    });
  });

  it('keeps field messages that come inside a {code, message, detail} body', () => {
    const error = toApiError(
      { code: 'validation_error', message: 'Check the form.', detail: [{ loc: ['body', 'name'], msg: 'too long' }] },
      response(422),
    );
    expect(error.message).toBe('Check the form.');
    expect(error.fields).toEqual({ name: 'too long' });
  });

  it('explains a network failure', () => {
    const error = toApiError(new TypeError('Failed to fetch'), undefined);
    expect(error.code).toBe('network_error');
    expect(error.message).toMatch(/could not be reached/);
  });

  it('falls back to a sentence per status for unknown bodies', () => {
    expect(toApiError('<html>bad gateway</html>', response(502)).message).toMatch(/HTTP 502/);
    expect(toApiError(undefined, response(404)).message).toMatch(/does not exist/);
    expect(toApiError({ detail: 'Not Found' }, response(404)).message).toBe('Not Found');
  });

  it('ignores non-list detail in validationFields', () => {
    expect(validationFields('nope')).toEqual({});
  });
});

describe('unwrap', () => {
  it('returns data on success and throws ApiError otherwise', async () => {
    await expect(unwrap(Promise.resolve({ data: 1, response: response(200) }))).resolves.toBe(1);
    await expect(
      unwrap(Promise.resolve({ error: { code: 'x', message: 'No.' }, response: response(400) })),
    ).rejects.toMatchObject({ code: 'x', message: 'No.', status: 400 });
  });

  it('refuses an HTML page where data was expected', async () => {
    const html = new Response('<!doctype html>', { status: 200, headers: { 'Content-Type': 'text/html' } });
    await expect(unwrap(Promise.resolve({ data: '<!doctype html>', response: html }))).rejects.toMatchObject({
      code: 'unexpected_response',
    });
  });
});
