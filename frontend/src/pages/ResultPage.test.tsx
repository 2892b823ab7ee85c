import { screen } from '@testing-library/react';
import { Route, Routes } from 'react-router-dom';
import { describe, expect, it, vi } from 'vitest';
import { withheldAnalysis } from '../test/fixtures';
import { renderWithProviders } from '../test/render';
import { ResultPage } from './ResultPage';

vi.mock('../client/sdk.gen', async (importOriginal) => ({
  ...(await importOriginal<typeof import('../client/sdk.gen')>()),
  historyReadHistoryEntry: vi.fn(async () => ({
    data: withheldAnalysis(),
    response: new Response('{}', { status: 200, headers: { 'Content-Type': 'application/json' } }),
  })),
}));

vi.mock('../api/artifacts', () => ({
  useArtifactUrl: (url: string | null | undefined) => ({ url: url ? `blob:${url}` : null, isLoading: false, isError: false, error: null }),
  fetchArtifact: vi.fn(async () => new Blob(['x'])),
  saveBlob: vi.fn(),
}));

describe('ResultPage out of the domain', () => {
  it('shows the banner with reasons and score, and the withheld notice instead of empty results', async () => {
    renderWithProviders(
      <Routes>
        <Route path="/history/:id" element={<ResultPage />} />
      </Routes>,
      { route: '/history/a1' },
    );
    const banner = await screen.findByTestId('domain-banner');
    expect(banner).toHaveTextContent('This image is unlike the slices the models were trained on');
    expect(banner).toHaveTextContent('The image is CT, the models were trained on MR');
    expect(banner).toHaveTextContent('Domain score 6.56');
    expect(screen.getByTestId('withheld-notice')).toHaveTextContent('Model outputs withheld');
    expect(screen.getByTestId('withheld-outputs')).toBeInTheDocument();
    expect(screen.queryByText('No classification in this result')).not.toBeInTheDocument();
    expect(screen.queryByTestId('as-status')).not.toBeInTheDocument();
    expect(screen.getByTestId('research-notice')).toBeInTheDocument();
  });
});
