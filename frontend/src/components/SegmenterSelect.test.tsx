import { screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { modelInfo } from '../test/models';
import { renderWithProviders } from '../test/render';
import { AnalyzePage } from '../pages/AnalyzePage';
import { StudiesPage } from '../pages/StudiesPage';

const sdk = vi.hoisted(() => ({ models: [] as unknown[], bodies: [] as Array<Record<string, unknown>> }));

const ok = (data: unknown) => ({
  data,
  response: new Response('{}', { status: 200, headers: { 'Content-Type': 'application/json' } }),
});

vi.mock('../client/sdk.gen', async (importOriginal) => ({
  ...(await importOriginal<typeof import('../client/sdk.gen')>()),
  modelsListModels: vi.fn(async () => ok(sdk.models)),
  healthLimits: vi.fn(async () => ok({ max_upload_bytes: 1_000_000, max_models_per_request: 4 })),
  inferenceAnalyze: vi.fn(async (options: { body: Record<string, unknown> }) => {
    sdk.bodies.push(options.body);
    return ok({ id: 'a1' });
  }),
  studiesListStudies: vi.fn(async () => ok({ items: [], total: 0, limit: 20, offset: 0 })),
  studiesCreateStudy: vi.fn(async (options: { body: Record<string, unknown> }) => {
    sdk.bodies.push(options.body);
    return ok({ id: 's1', status: 'queued' });
  }),
}));

const CLASSIFIER = modelInfo({ key: 'cnn', display_name: 'Simple CNN' });
const SEGMENTERS = [
  modelInfo({
    key: 'lite',
    display_name: 'Lite U-Net',
    task: 'segmentation',
    flops: 1_708_730_368,
    metrics: { test: { dice: 0.904 } },
  }),
  modelInfo({
    key: 'big',
    display_name: 'Lite U-Net at 256 px',
    task: 'segmentation',
    default: false,
    flops: 7_150_000_000,
    metrics: { test: { dice: 0.912 } },
  }),
];
const DEFAULT_LABEL = 'Lite U-Net (default) · Dice 0.904 · 1.7\u00a0GFLOPs a slice';
const OTHER_LABEL = 'Lite U-Net at 256 px · Dice 0.912 · 7.2\u00a0GFLOPs a slice';

async function chooseOther(user: ReturnType<typeof userEvent.setup>) {
  const select = await screen.findByRole('textbox', { name: 'Segmentation model' });
  await waitFor(() => expect(select).toHaveValue(DEFAULT_LABEL));
  await user.click(select);
  await user.click(await screen.findByRole('option', { name: OTHER_LABEL, hidden: true }));
  expect(select).toHaveValue(OTHER_LABEL);
}

function npyFile(): File {
  const bytes = new Uint8Array(64);
  bytes.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]);
  return new File([bytes], 'slice.npy', { type: 'application/octet-stream' });
}

async function runWith(user: ReturnType<typeof userEvent.setup>) {
  await user.upload(screen.getByLabelText('Image file'), npyFile());
  await screen.findByTestId('file-preview');
  const run = screen.getByTestId('run-analysis');
  await waitFor(() => expect(run).toBeEnabled());
  await user.click(run);
  await waitFor(() => expect(sdk.bodies).toHaveLength(1));
  return sdk.bodies[0];
}

describe('segmentation model choice', () => {
  beforeEach(() => {
    sdk.bodies = [];
  });

  it('preselects the default segmenter, lists each with its Dice and cost, and sends the one chosen', async () => {
    sdk.models = [CLASSIFIER, ...SEGMENTERS];
    const user = userEvent.setup();
    renderWithProviders(<AnalyzePage />);
    await chooseOther(user);

    const body = await runWith(user);
    expect(body.segmentation_model).toBe('big');
    expect(body.models).toEqual(['cnn']);
  });

  it('sends the default segmenter when left alone, and shows no choice with one segmenter', async () => {
    sdk.models = [CLASSIFIER, modelInfo({ key: 'only', display_name: 'U-Net', task: 'segmentation' })];
    const user = userEvent.setup();
    renderWithProviders(<AnalyzePage />);
    await screen.findByText('Simple CNN');
    expect(screen.queryByRole('textbox', { name: 'Segmentation model' })).not.toBeInTheDocument();
    const body = await runWith(user);
    expect(body.segmentation_model).toBe('only');
  });

  it('sends the chosen segmenter with a new study', async () => {
    sdk.models = [CLASSIFIER, ...SEGMENTERS];
    const user = userEvent.setup();
    renderWithProviders(<StudiesPage />);
    await chooseOther(user);
    await user.upload(screen.getByTestId('study-files'), new File([new Uint8Array(400)], 'volume.nii'));
    await screen.findByTestId('chosen-files');
    const run = screen.getByTestId('run-study');
    await waitFor(() => expect(run).toBeEnabled());
    await user.click(run);
    await waitFor(() => expect(sdk.bodies).toHaveLength(1));
    expect(sdk.bodies[0].segmentation_model).toBe('big');
    expect(sdk.bodies[0].models).toEqual(['cnn']);
  });
});
