/** Fixed model-registry answers for component tests (shapes from the generated client). */
import type { Calibration, ExplanationBenchmark, ModelCard, ModelInfo } from '../client/types.gen';
import { PROVENANCE } from './fixtures';

export const EXPLANATION: ExplanationBenchmark = {
  default_method: 'gradcam++',
  criterion: 'highest mean faithfulness score',
  measured: {
    gradcam: {
      n: 40,
      score: 0.21,
      score_ci: [0.15, 0.27],
      deletion_auc: 0.412,
      deletion_auc_ci: [0.38, 0.447],
      insertion_auc: 0.633,
      insertion_auc_ci: [0.6, 0.665],
      empty_fraction: 0,
      seconds_per_slice: 0.05,
    },
    'gradcam++': {
      n: 40,
      score: 0.34,
      score_ci: [0.28, 0.4],
      deletion_auc: 0.355,
      deletion_auc_ci: [0.32, 0.39],
      insertion_auc: 0.701,
      insertion_auc_ci: [0.67, 0.73],
      empty_fraction: 0,
    },
  },
  split: 'test',
  slices: Array.from({ length: 40 }, (_, i) => `img_${i}`),
  subjects: 12,
  steps: 20,
  n_random: 5,
  baseline: 'blur',
  ci: '95% percentile bootstrap over subjects',
};

export const CALIBRATION: Calibration = {
  method: 'temperature',
  fitted_on: 'val',
  evaluated_on: 'test',
  n_fit: 300,
  n_eval: 410,
  bins: 10,
  binary: { temperature: 1.84, ece_before: 0.121, ece_after: 0.034, nll_before: 0.512, nll_after: 0.398 },
  stage: { temperature: 1.37, ece_before: 0.088, ece_after: 0.041, nll_before: 0.95, nll_after: 0.91 },
};

export function modelInfo(overrides: Partial<ModelInfo> = {}): ModelInfo {
  return {
    key: 'cnn',
    display_name: 'Simple CNN',
    version: '1.0.0',
    architecture: 'simple_cnn',
    task: 'classification',
    default: true,
    parameters: 1_200_000,
    flops: 350_000_000,
    input_shape: [256, 256, 1],
    label_provenance: PROVENANCE,
    metrics: { binary_accuracy: 0.91 },
    ready: true,
    default_method: 'gradcam++',
    explanation: EXPLANATION,
    calibration: CALIBRATION,
    ...overrides,
  };
}

export function modelCard(overrides: Partial<ModelCard> = {}): ModelCard {
  return {
    ...modelInfo(),
    outputs: { binary_output: ['negative', 'positive'], stage_output: ['Normal', 'Early', 'Moderate', 'Advanced'] },
    weights: { file: 'model.weights.h5', storage_dtype: 'float16' },
    plots: [
      { name: 'confusion_binary.png', url: '/models/cnn/plots/confusion_binary.png' },
      { name: 'reliability_binary.png', url: '/models/cnn/plots/reliability_binary.png' },
      { name: 'reliability_stage.png', url: '/models/cnn/plots/reliability_stage.png' },
    ],
    readme: null,
    ...overrides,
  };
}
