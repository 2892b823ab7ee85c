import { screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { Route, Routes } from 'react-router-dom';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import type { StudyPublic } from '../client/types.gen';
import { study, studyResult } from '../test/fixtures';
import { renderWithProviders } from '../test/render';
import { StudyPage } from './StudyPage';

const sdk = vi.hoisted(() => ({ current: null as StudyPublic | null, cancelled: 0 }));

const ok = (data: unknown) => ({
  data,
  response: new Response('{}', { status: 200, headers: { 'Content-Type': 'application/json' } }),
});

vi.mock('../client/sdk.gen', async (importOriginal) => ({
  ...(await importOriginal<typeof import('../client/sdk.gen')>()),
  studiesReadStudy: vi.fn(async () => ok(sdk.current)),
  studiesCancelStudy: vi.fn(async () => {
    sdk.cancelled += 1;
    return ok({ ...sdk.current, status: 'cancelled' });
  }),
}));

vi.mock('../api/artifacts', () => ({
  useArtifactUrl: (url: string | null | undefined) => ({ url: url ? `blob:${url}` : null, isLoading: false, isError: false, error: null }),
  fetchArtifact: vi.fn(async () => new Blob(['x'])),
  saveBlob: vi.fn(),
}));

function renderStudy() {
  return renderWithProviders(
    <Routes>
      <Route path="/studies/:id" element={<StudyPage />} />
    </Routes>,
    { route: '/studies/s1' },
  );
}

describe('StudyPage', () => {
  beforeEach(() => {
    sdk.cancelled = 0;
  });

  it('shows the phase and slices while running, and cancels', async () => {
    const user = userEvent.setup();
    sdk.current = study('running');
    renderStudy();
    const running = await screen.findByTestId('study-running');
    expect(running).toHaveTextContent('Segmenting every slice');
    expect(running).toHaveTextContent('2 of 4 slices');
    expect(screen.getByRole('progressbar')).toHaveAttribute('aria-valuenow', '50');
    expect(screen.getByTestId('research-notice')).toBeInTheDocument();
    await user.click(screen.getByRole('button', { name: 'Cancel' }));
    expect(await screen.findByTestId('study-cancelled')).toBeInTheDocument();
    expect(sdk.cancelled).toBe(1);
  });

  it('shows the error code and message of a failed study', async () => {
    sdk.current = study('failed', { error: { code: 'not_sagittal', message: 'No series of the upload is sagittal.' } });
    renderStudy();
    const failed = await screen.findByTestId('study-failed');
    expect(failed).toHaveTextContent('No series of the upload is sagittal.');
    expect(failed).toHaveTextContent('not_sagittal');
  });

  it('shows the viewer, the chart, the study-level result and the input of a done study', async () => {
    sdk.current = study('done');
    renderStudy();
    expect(await screen.findByTestId('slice-viewer')).toBeInTheDocument();
    // Opens on the central key slice.
    expect(screen.getByTestId('slice-label')).toHaveTextContent('Slice 3 of 4');
    expect(screen.getByTestId('series-chart')).toBeInTheDocument();
    const model = screen.getByTestId('study-model-cnn');
    expect(model).toHaveTextContent('AS positive');
    expect(model).toHaveTextContent('Over 2 key slices, 100% agree on the AS status and 50% on the stage');
    expect(model).toHaveTextContent('mean 65.0%, highest 72.0%');
    expect(screen.getByTestId('study-provenance')).toHaveTextContent('image-feature rules, not radiologists');
    expect(screen.getByTestId('skipped-files')).toHaveTextContent('corrupt_image');
    expect(screen.getByTestId('domain-ok')).toBeInTheDocument();
    expect(screen.getByRole('button', { name: /Mask \(NIfTI\)/ })).toBeInTheDocument();
    expect(screen.getByRole('button', { name: /Study \(JSON\)/ })).toBeInTheDocument();
    expect(screen.getByTestId('research-notice')).toBeInTheDocument();
  });

  it('says when the outputs were withheld instead of showing empty tables', async () => {
    const result = studyResult({
      withheld: true,
      models: [],
      domain: { in_domain: false, score: 3.1, reasons: ['4 of the 4 key slices are unlike the training slices'], slices_out_of_domain: 4, slices_checked: 4 },
    });
    result.slices = result.slices.map((s) => ({ ...s, classifications: [], heatmaps: [] }));
    sdk.current = study('done', { result, in_domain: false });
    renderStudy();
    expect(await screen.findByTestId('withheld-notice')).toBeInTheDocument();
    expect(screen.getByTestId('domain-banner')).toHaveTextContent('This series is unlike');
    expect(screen.getByTestId('study-no-models')).toHaveTextContent('withheld');
    expect(screen.getByTestId('series-chart-empty')).toBeInTheDocument();
    expect(screen.getByRole('switch', { name: /^Heatmap/ })).toBeDisabled();
  });
});
