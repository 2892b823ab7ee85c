import { screen, within } from '@testing-library/react';
import { describe, expect, it, vi } from 'vitest';
import type { ModelInfo } from '../client/types.gen';
import { modelInfo } from '../test/models';
import { renderWithProviders } from '../test/render';
import { ModelsPage } from './ModelsPage';

const sdk = vi.hoisted(() => ({ current: [] as ModelInfo[] }));

vi.mock('../client/sdk.gen', async (importOriginal) => ({
  ...(await importOriginal<typeof import('../client/sdk.gen')>()),
  modelsListModels: vi.fn(async () => ({
    data: sdk.current,
    response: new Response('{}', { status: 200, headers: { 'Content-Type': 'application/json' } }),
  })),
}));

describe('ModelsPage', () => {
  it('marks a model that is still loading with a text badge, and only that one', async () => {
    sdk.current = [
      modelInfo({ key: 'cnn', display_name: 'Simple CNN', ready: false }),
      modelInfo({ key: 'vit', display_name: 'ViT', default: false, ready: true }),
    ];
    renderWithProviders(<ModelsPage />);
    const loading = await screen.findByRole('article', { name: 'Simple CNN' });
    const badge = within(loading).getByRole('status');
    expect(badge).toHaveTextContent(/^loading/);
    expect(badge).toHaveTextContent('still loading in the background');
    expect(screen.getByTestId('loading-cnn')).toBe(badge);

    const warm = screen.getByRole('article', { name: 'ViT' });
    expect(within(warm).queryByRole('status')).not.toBeInTheDocument();
    expect(screen.queryByTestId('loading-vit')).not.toBeInTheDocument();
  });

  it('shows no loading badge when the server does not say', async () => {
    sdk.current = [modelInfo({ ready: undefined })];
    renderWithProviders(<ModelsPage />);
    await screen.findByRole('article', { name: 'Simple CNN' });
    expect(screen.queryByRole('status')).not.toBeInTheDocument();
  });
});
