import { defineConfig } from '@hey-api/openapi-ts';

// The schema is dumped from the backend's create_app() (`make client`), never hand-edited.
export default defineConfig({
  input: './openapi.json',
  output: { path: './src/client' },
  // Enums (stages, AS status, CAM methods, focus) become runtime constants: the web app reads
  // the shared vocabulary from the API's schema instead of copying it.
  plugins: ['@hey-api/client-fetch', { name: '@hey-api/typescript', enums: 'javascript' }, '@hey-api/sdk'],
});
