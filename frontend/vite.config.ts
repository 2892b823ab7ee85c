/// <reference types="vitest/config" />
import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

// API prefixes proxied to the backend during `npm run dev`; in production the API serves the SPA itself.
const API_PREFIXES = [
  '/auth',
  '/analyses',
  '/segment',
  '/classify',
  '/explain',
  '/history',
  '/models',
  '/artifacts',
  '/health',
  '/jobs',
  '/api-keys',
];
const backend = process.env.SPONDYSCAN_API ?? 'http://127.0.0.1:8000';

export default defineConfig({
  plugins: [react()],
  server: {
    proxy: Object.fromEntries(
      API_PREFIXES.map((prefix) => [
        prefix,
        {
          target: backend,
          // Let the SPA own browser navigations to the same paths (e.g. /history/<id>).
          bypass: (req: { headers: Record<string, string | string[] | undefined> }) =>
            String(req.headers.accept ?? '').includes('text/html') ? '/index.html' : undefined,
        },
      ]),
    ),
  },
  build: {
    outDir: 'dist',
    sourcemap: false,
    chunkSizeWarningLimit: 700,
    rollupOptions: {
      output: {
        // Libraries change less often than the app: separate files stay cached across releases.
        manualChunks: {
          react: ['react', 'react-dom', 'react-router-dom'],
          mantine: ['@mantine/core', '@mantine/hooks', '@mantine/form', '@mantine/dates', '@mantine/dropzone', '@mantine/notifications', 'dayjs'],
          query: ['@tanstack/react-query'],
        },
      },
    },
  },
  test: {
    globals: true,
    environment: 'jsdom',
    setupFiles: ['./src/test/setup.ts'],
    include: ['src/**/*.test.{ts,tsx}'],
    css: false,
    // The machine is shared: generous limits keep slow runs from failing for the wrong reason.
    testTimeout: 30_000,
    pool: 'threads',
    poolOptions: { threads: { maxThreads: 2, minThreads: 1 } },
  },
});
