/** Fixed API answers for component tests (shapes from the generated client). */
import type { AnalysisResult, LabelProvenance, ModelRef, StudyPublic, StudyResult, StudySlice } from '../client/types.gen';

export const PROVENANCE: LabelProvenance = {
  label_source: 'feature_rule_v2',
  rule_version: 'v2',
  description: 'AS status and stage were assigned by a feature-based labelling rule.',
};

export const CNN: ModelRef = { key: 'cnn', display_name: 'CNN', version: '1.0.0', architecture: 'simple_cnn' };
export const SEG: ModelRef = { key: 'seg', display_name: 'U-Net', version: '1.0.0', architecture: 'unet' };

export function slice(index: number, overrides: Partial<StudySlice> = {}): StudySlice {
  return {
    index,
    position_mm: index * 4,
    image_url: `/artifacts/s1/slice_${index}.png`,
    mask_url: `/artifacts/s1/mask_${index}.png`,
    mask_fraction: 0.1,
    key: false,
    domain: { in_domain: true, score: 0.4, reasons: [] },
    classifications: [{ model: 'cnn', p_positive: 0.2 + index * 0.1, as_status: 'negative', stage: 'Normal', stage_probability: 0.6 }],
    heatmaps: [],
    error: null,
    ...overrides,
  };
}

export function studyResult(overrides: Partial<StudyResult> = {}): StudyResult {
  const slices = [0, 1, 2, 3].map((i) =>
    slice(i, i === 1 || i === 2
      ? {
          key: true,
          heatmaps: [
            {
              model: 'cnn',
              class_label: 'positive',
              probability: 0.7,
              heatmap_url: `/artifacts/s1/heat_${i}.png`,
              overlay_url: `/artifacts/s1/overlay_${i}.png`,
              inside_fraction: 0.8,
              faithfulness_score: 0.2,
            },
          ],
        }
      : {}),
  );
  return {
    id: 's1',
    created_at: '2026-03-05T10:00:00Z',
    kind: 'study',
    input: {
      format: 'dicom',
      slices: 4,
      rows: 256,
      cols: 256,
      files: 5,
      modality: 'MR',
      pixel_spacing: [0.9, 0.9],
      slice_spacing: 4,
      skipped: [{ name: 'notes.txt', code: 'corrupt_image', reason: 'not readable DICOM' }],
      duplicates: [],
      other_series: [],
    },
    segmentation: {
      model: SEG,
      mask_url: '/studies/s1/mask.nii.gz',
      voxels: 1200,
      volume_ml: 3.5,
      key_slices: [1, 2],
      key_slice_rule: 'slices whose segmented area is at least half the largest',
      label_provenance: PROVENANCE,
    },
    models: [
      {
        model: CNN,
        as_status: 'positive',
        as_probability: 0.7,
        as_probabilities: { negative: 0.3, positive: 0.7 },
        stage: 'Early',
        stage_probability: 0.5,
        stage_probabilities: { Normal: 0.2, Early: 0.5, Moderate: 0.2, Advanced: 0.1 },
        p_positive_mean: 0.65,
        p_positive_max: 0.72,
        status_agreement: 1,
        stage_agreement: 0.5,
        slices: 2,
        label_provenance: PROVENANCE,
      },
    ],
    slices,
    domain: { in_domain: true, score: 0.5, reasons: [], slices_out_of_domain: 0, slices_checked: 4 },
    withheld: false,
    notice: 'Research use only - not a diagnosis.',
    research_use_only: true,
    ...overrides,
  };
}

export function study(status: StudyPublic['status'], overrides: Partial<StudyPublic> = {}): StudyPublic {
  const done = status === 'done';
  return {
    id: 's1',
    status,
    created_at: '2026-03-05T10:00:00Z',
    progress: { phase: status === 'running' ? 'segment' : null, slices_done: done ? 4 : 2, slices_total: 4, percent: done ? 100 : 50 },
    slices: 4,
    format: 'dicom',
    models: ['cnn'],
    url: '/studies/s1',
    options: { models: ['cnn'], explain: true, allow_out_of_domain: false },
    input: { format: 'dicom', slices: 4, rows: 256, cols: 256, skipped: [] },
    error: null,
    mask_url: done ? '/studies/s1/mask.nii.gz' : null,
    result: done ? studyResult() : null,
    notice: 'Research use only - not a diagnosis.',
    research_use_only: true,
    ...overrides,
  };
}

export function withheldAnalysis(): AnalysisResult {
  return {
    id: 'a1',
    kind: 'analysis',
    created_at: '2026-03-05T10:00:00Z',
    image: { filename: 'noise.png', format: 'png', width: 256, height: 256, sha256: 'x' },
    image_url: '/artifacts/a1/input.png',
    segmentation: null,
    classifications: [],
    explanations: [],
    domain: {
      in_domain: false,
      score: 6.56,
      reasons: ['its image statistics are far from the training slices (score 6.56 > 1)', 'the image is CT, the models were trained on MR'],
    },
    withheld: true,
    notice: 'Research use only - not a diagnosis.',
    research_use_only: true,
  };
}
