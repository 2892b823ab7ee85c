import { screen, within } from '@testing-library/react';
import { Route, Routes } from 'react-router-dom';
import { describe, expect, it, vi } from 'vitest';
import type { ModelCard } from '../client/types.gen';
import { modelCard } from '../test/models';
import { renderWithProviders } from '../test/render';
import { ModelDetailPage } from './ModelDetailPage';

const sdk = vi.hoisted(() => ({ current: null as ModelCard | null }));

vi.mock('../client/sdk.gen', async (importOriginal) => ({
  ...(await importOriginal<typeof import('../client/sdk.gen')>()),
  modelsReadModel: vi.fn(async () => ({
    data: sdk.current,
    response: new Response('{}', { status: 200, headers: { 'Content-Type': 'application/json' } }),
  })),
}));

vi.mock('../api/artifacts', () => ({
  useArtifactUrl: (url: string | null | undefined) => ({ url: url ? `blob:${url}` : null, isLoading: false, isError: false, error: null }),
  fetchArtifact: vi.fn(async () => new Blob(['x'])),
  saveBlob: vi.fn(),
}));

function renderCard(card: ModelCard) {
  sdk.current = card;
  return renderWithProviders(
    <Routes>
      <Route path="/models/:key" element={<ModelDetailPage />} />
    </Routes>,
    { route: `/models/${card.key}` },
  );
}

describe('ModelDetailPage', () => {
  it('tabulates the explanation benchmark, best method first and the default named in text', async () => {
    renderCard(modelCard());
    const section = await screen.findByRole('region', { name: 'Explanation methods' });
    expect(section).toHaveTextContent('removing the pixels a method highlights lowers');
    expect(section).toHaveTextContent('faster than removing random pixels');
    expect(section).toHaveTextContent('The default method, Grad-CAM++, is the one with the best measured score');

    const table = within(section).getByRole('table');
    expect(table).toHaveTextContent('Measured on 40 slices from 12 subjects of the test split');
    const rows = within(table).getAllByRole('row').slice(1);
    expect(rows).toHaveLength(2);
    // Sorted by score: Grad-CAM++ (0.34) before Grad-CAM (0.21).
    expect(within(rows[0]!).getByRole('rowheader')).toHaveTextContent('Grad-CAM++default');
    expect(rows[0]).toHaveTextContent('0.340 (0.280–0.400)');
    expect(rows[0]).toHaveTextContent('0.355 (0.320–0.390)');
    expect(rows[0]).toHaveTextContent('0.701 (0.670–0.730)');
    expect(within(rows[1]!).getByRole('rowheader')).toHaveTextContent(/^Grad-CAM$/);
    expect(rows[1]).toHaveTextContent('0.412 (0.380–0.447)');
    expect(screen.getAllByTestId('default-method')).toHaveLength(1);
    expect(screen.getByTestId('default-method-line')).toHaveTextContent('Default explanation method: Grad-CAM++');
  });

  it('tabulates calibration per head and shows the reliability diagrams there', async () => {
    renderCard(modelCard());
    const section = await screen.findByRole('region', { name: 'Calibration' });
    expect(section).toHaveTextContent('never changes the predicted class');
    const table = within(section).getByRole('table');
    expect(table).toHaveTextContent('Temperature fitted on val (300 images); errors measured on test (410 images)');
    const binary = within(table).getByRole('row', { name: /AS status/ });
    expect(binary).toHaveTextContent('1.84');
    expect(binary).toHaveTextContent('0.121 → 0.034');
    expect(binary).toHaveTextContent('0.512 → 0.398');
    const stage = within(table).getByRole('row', { name: /Stage/ });
    expect(stage).toHaveTextContent('1.37');
    expect(stage).toHaveTextContent('0.088 → 0.041');

    expect(within(section).getByAltText(/Reliability diagram, AS status/)).toBeInTheDocument();
    expect(within(section).getByAltText(/Reliability diagram, Stage/)).toBeInTheDocument();
    // Shown once, with the calibration, not again among the other plots.
    expect(screen.getAllByRole('img', { name: /reliability/i })).toHaveLength(2);
    expect(screen.getByAltText('Confusion binary')).toBeInTheDocument();
  });

  it('hides both sections when the bundle records neither', async () => {
    renderCard(modelCard({ explanation: null, calibration: null, default_method: null }));
    await screen.findByText('Measured metrics');
    expect(screen.queryByRole('region', { name: 'Explanation methods' })).not.toBeInTheDocument();
    expect(screen.queryByRole('region', { name: 'Calibration' })).not.toBeInTheDocument();
    expect(screen.queryByRole('region', { name: 'Cross-validation' })).not.toBeInTheDocument();
    expect(screen.queryByTestId('explanation-table')).not.toBeInTheDocument();
    expect(screen.queryByTestId('calibration-table')).not.toBeInTheDocument();
    expect(screen.queryByTestId('default-method-line')).not.toBeInTheDocument();
    // Without a calibration section the reliability plots stay with the others.
    expect(screen.getByAltText('Reliability binary')).toBeInTheDocument();
  });

  it('sets the cross-validated values and their intervals beside the single split, fold by fold', async () => {
    const fold = (i: number, accuracy: number, recall: number | null) => ({
      fold: i,
      subjects: 15,
      n: 135,
      metrics: { binary_accuracy: accuracy, early_recall: recall },
    });
    renderCard(
      modelCard({
        metrics: {
          binary_accuracy: 0.9778,
          early_recall: 0.875,
          per_source: { chu: { n: 18, binary_accuracy: 0.8889 } },
        },
        cross_validation: {
          k: 2,
          subjects: 30,
          slices: 270,
          evaluated: '2026-12-03',
          note: 'labels are the dataset\'s own',
          metrics: {
            binary_accuracy: { pooled: 0.963, fold_mean: 0.9631, ci95: [0.9475, 0.9769] },
            early_recall: { pooled: 0.678, fold_mean: 0.7, ci95: [0.569, 0.786] },
          },
          folds: [fold(0, 0.9778, 0.7), fold(1, 0.9407, null)],
          by_source: {
            chu: { subjects: 7, n: 63, binary_accuracy: 0.873, early_recall: 0.5 },
            zukic: { subjects: 4, n: 36, binary_accuracy: 1.0 },
          },
          fold_results: 'cross_validation/',
        },
      }),
    );
    const section = await screen.findByRole('region', { name: 'Cross-validation' });
    expect(section).toHaveTextContent('tested on the subjects it left out');
    expect(section).toHaveTextContent("Note: labels are the dataset's own.");
    const table = within(section).getByTestId('cv-table');
    expect(table).toHaveTextContent('2 folds, 270 slices from 30 subjects');
    expect(table).toHaveTextContent('95% bootstrap over subjects; run 2026-12-03');
    const accuracy = within(table).getByRole('row', { name: /Binary accuracy/ });
    const cells = within(accuracy).getAllByRole('cell').map((c) => c.textContent);
    expect(cells.slice(0, 3)).toEqual(['97.8%', '96.3% (94.8%–97.7%)', '97.8% · 94.1%']);
    const recall = within(table).getByRole('row', { name: /Early recall/ });
    const recallCells = within(recall).getAllByRole('cell').map((c) => c.textContent);
    // A fold without Early slices has no recall: a dash, not a zero.
    expect(recallCells.slice(0, 3)).toEqual(['0.875', '0.678 (0.569–0.786)', '0.700 · —']);
    expect(within(section).getAllByTestId('cv-strip')).toHaveLength(2);
    // By source: the pooled held-out value with the single split's for the same source beside it;
    // a metric a source lacks (no Early slices, or not measured per source) is a dash.
    const sources = within(section).getByTestId('cv-source-table');
    const chu = within(sources).getByRole('row', { name: /^chu/ });
    expect(within(chu).getAllByRole('cell').map((c) => c.textContent)).toEqual([
      '7',
      '63',
      '87.3% (88.9%)',
      '0.500 (—)',
    ]);
    const zukic = within(sources).getByRole('row', { name: /^zukic/ });
    expect(within(zukic).getAllByRole('cell').map((c) => c.textContent)).toEqual(['4', '36', '100.0% (—)', '— (—)']);
    expect(section).toHaveTextContent("held-out per-slice scores are kept in the bundle's cross_validation/ folder");
  });
});
