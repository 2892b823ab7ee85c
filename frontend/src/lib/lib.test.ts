import { describe, expect, it } from 'vitest';
import { sniffFormat } from './fileFormat';
import { formatMetricName } from './format';
import { crossValidatedHeadline, flattenMetrics, headlineMetric } from './metrics';
import { colorizeHeatmap, contourMask, jet, jetValue } from './pixels';
import { faithfulnessSentence, orderedProbabilities } from './results';

const bytes = (...values: number[]) => new Uint8Array(values);

describe('sniffFormat', () => {
  it('recognises images by content', () => {
    expect(sniffFormat(bytes(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a), 'x.bin')).toBe('png');
    expect(sniffFormat(bytes(0xff, 0xd8, 0xff, 0xe0), 'scan')).toBe('jpeg');
    expect(sniffFormat(bytes(0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0), 'a.npy')).toBe('npy');
    const dicom = new Uint8Array(200);
    dicom.set([0x44, 0x49, 0x43, 0x4d], 128);
    expect(sniffFormat(dicom, 'IM0001')).toBe('dicom');
    const nifti = new Uint8Array(352);
    new DataView(nifti.buffer).setInt32(0, 348, true);
    expect(sniffFormat(nifti, 'brain.nii')).toBe('nifti');
    expect(sniffFormat(bytes(0x1f, 0x8b, 8), 'vol.nii.gz')).toBe('nifti');
  });

  it('refuses text and documents', () => {
    expect(sniffFormat(new TextEncoder().encode('hello, this is not an image'), 'notes.txt')).toBeNull();
    expect(sniffFormat(new TextEncoder().encode('%PDF-1.7'), 'paper.pdf')).toBeNull();
    expect(sniffFormat(bytes(0x1f, 0x8b, 8), 'archive.tar.gz')).toBeNull();
  });
});

describe('metrics', () => {
  it('finds the headline number wherever the bundle keeps it', () => {
    expect(headlineMetric('classification', { accuracy: 0.8 })).toEqual({ label: 'Accuracy', value: 0.8 });
    expect(headlineMetric('classification', { test: { binary: { accuracy: 0.7 } }, train: { accuracy: 1 } })?.value).toBe(0.7);
    expect(headlineMetric('classification', { binary_accuracy: 85 })?.value).toBeCloseTo(0.85);
    expect(headlineMetric('segmentation', { test: { dice: 0.91 } })).toEqual({ label: 'Dice', value: 0.91 });
    expect(headlineMetric('classification', {})).toBeNull();
  });

  it('takes the cross-validated headline from the same metric, with its interval', () => {
    const metric = (pooled: number): { pooled: number; ci95: [number, number] } => ({ pooled, ci95: [pooled - 0.02, pooled + 0.01] });
    const seg = { k: 5, metrics: { iou: metric(0.81), dice: metric(0.89) } };
    expect(crossValidatedHeadline('segmentation', seg)).toEqual({ label: 'Dice', value: 0.89, low: 0.87, high: 0.9, folds: 5 });
    expect(crossValidatedHeadline('segmentation', { k: 5, metrics: { iou: metric(0.81) } })?.label).toBe('IoU');
    const cls = { k: 5, metrics: { binary_accuracy: metric(0.963), stage_accuracy: metric(0.88) } };
    expect(crossValidatedHeadline('classification', cls)?.value).toBe(0.963);
    expect(crossValidatedHeadline('classification', { k: 5, metrics: { stage_accuracy: metric(0.88) } })).toBeNull();
    expect(crossValidatedHeadline('segmentation', null)).toBeNull();
  });

  it('flattens nested metrics for tables', () => {
    expect(flattenMetrics({ a: 1, b: { c: 2, d: 'x' } })).toEqual([
      ['a', 1],
      ['b.c', 2],
    ]);
  });
});

describe('results', () => {
  it('explains faithfulness in one sentence', () => {
    const base = { deletion_auc: 0.2, insertion_auc: 0.8, random_deletion_auc: 0.5 };
    expect(faithfulnessSentence({ ...base, score: 0.3 })).toMatch(/much faster than hiding random regions \(score 0.30\)/);
    expect(faithfulnessSentence({ ...base, score: 0.02 })).toMatch(/rough guide/);
    expect(faithfulnessSentence({ ...base, score: -0.1 })).toMatch(/may not show/);
    expect(faithfulnessSentence(null)).toMatch(/No faithfulness test/);
    expect(faithfulnessSentence({ ...base, score: 0.2, interpretation: 'Server says so.' })).toBe('Server says so.');
  });

  it('orders stage probabilities by severity', () => {
    const ordered = orderedProbabilities({ Advanced: 0.1, Normal: 0.4, Early: 0.3, Moderate: 0.2 }, [
      'Normal',
      'Early',
      'Moderate',
      'Advanced',
    ]);
    expect(ordered.map(([k]) => k)).toEqual(['Normal', 'Early', 'Moderate', 'Advanced']);
  });
});

describe('pixels', () => {
  it('maps the JET ends to blue and red', () => {
    expect(jet(0)).toEqual([0, 0, 128]);
    expect(jet(1)).toEqual([128, 0, 0]);
  });

  it('reads the heat back from a JET colour', () => {
    expect(jetValue(0, 0, 128)).toBeCloseTo(0, 1);
    expect(jetValue(128, 0, 0)).toBeCloseTo(1, 1);
    const [r, g, b] = jet(0.5);
    expect(jetValue(r, g, b)).toBeCloseTo(0.5, 1);
  });

  it('makes cold heat transparent and hot heat opaque', () => {
    const data = new Uint8ClampedArray([...jet(0), 255, ...jet(1), 255, ...jet(0.6), 255]);
    colorizeHeatmap(data);
    expect(data[3]).toBe(0);
    expect(data[7]).toBe(255);
    expect(data[11]).toBeGreaterThan(100);
    expect(Array.from(data.slice(4, 7))).toEqual([...jet(1)]);
  });

  it('keeps only the outline of a mask', () => {
    // 4x4 image with a 2x2 block at (1,1): every block pixel touches background.
    const w = 5;
    const h = 5;
    const data = new Uint8ClampedArray(w * h * 4);
    for (let y = 1; y <= 3; y += 1) for (let x = 1; x <= 3; x += 1) data[(y * w + x) * 4] = 255;
    contourMask(data, w, h, [1, 2, 3]);
    const alpha = (x: number, y: number) => data[(y * w + x) * 4 + 3];
    expect(alpha(1, 1)).toBe(255);
    expect(alpha(2, 1)).toBe(255);
    expect(alpha(2, 2)).toBe(0); // the centre of the 3x3 block is inside, not on the edge
    expect(alpha(0, 0)).toBe(0);
  });
});

describe('formatMetricName', () => {
  it('spells the abbreviations of metric names as they are written', () => {
    expect(formatMetricName('iou')).toBe('IoU');
    expect(formatMetricName('binary_roc_auc')).toBe('Binary ROC AUC');
    expect(formatMetricName('stage_macro_f1')).toBe('Stage macro F1');
    expect(formatMetricName('as_status')).toBe('AS status');
    expect(formatMetricName('per_source.chu.dice')).toBe('Per source chu dice');
    expect(formatMetricName('confusion_binary')).toBe('Confusion binary');
  });
});
