import { defineConfig } from '@hey-api/openapi-ts';

// The schema is dumped from the backend's create_app() (`make client`), never hand-edited.
export default defineConfig({
  input: './openapi.json',
  output: { path: './src/client' },
  plugins: ['@hey-api/client-fetch', '@hey-api/typescript', '@hey-api/sdk'],
});
