import { describe, expect, it } from 'vitest';
import { slice } from '../test/fixtures';
import {
  bandX,
  CHART_FRAME,
  chartModels,
  chartX,
  chartY,
  downloadName,
  geometrySentence,
  indexAtX,
  initialSlice,
  isJunkFile,
  isOpenStatus,
  linePath,
  phaseLabel,
  provenanceShort,
  readStudyInput,
  runs,
  seriesByModel,
  sliceForKey,
  uploadShape,
  wheelPixels,
  wheelSteps,
} from './studies';

describe('slice navigation', () => {
  it('moves one slice with the arrows and clamps at the ends', () => {
    expect(sliceForKey('ArrowRight', 3, 10)).toBe(4);
    expect(sliceForKey('ArrowDown', 3, 10)).toBe(4);
    expect(sliceForKey('ArrowLeft', 3, 10)).toBe(2);
    expect(sliceForKey('ArrowUp', 3, 10)).toBe(2);
    expect(sliceForKey('ArrowLeft', 0, 10)).toBe(0);
    expect(sliceForKey('ArrowRight', 9, 10)).toBe(9);
  });

  it('jumps with Home, End and the page keys', () => {
    expect(sliceForKey('Home', 5, 10)).toBe(0);
    expect(sliceForKey('End', 5, 10)).toBe(9);
    expect(sliceForKey('PageDown', 5, 30)).toBe(15);
    expect(sliceForKey('PageUp', 5, 30)).toBe(0);
  });

  it('leaves other keys (and empty series) to the browser', () => {
    expect(sliceForKey('Tab', 3, 10)).toBeNull();
    expect(sliceForKey('a', 3, 10)).toBeNull();
    expect(sliceForKey('ArrowRight', 0, 0)).toBeNull();
  });

  it('turns wheel travel into whole steps and keeps the rest', () => {
    expect(wheelSteps(0, 100)).toEqual({ steps: 2, rest: 0 });
    expect(wheelSteps(0, 30)).toEqual({ steps: 0, rest: 30 });
    expect(wheelSteps(30, 30)).toEqual({ steps: 1, rest: 10 });
    expect(wheelSteps(0, -120)).toEqual({ steps: -2, rest: -20 });
    expect(wheelPixels(3, 1)).toBe(48);
    expect(wheelPixels(1, 2)).toBe(800);
    expect(wheelPixels(7, 0)).toBe(7);
  });

  it('opens on the central key slice, else the middle', () => {
    expect(initialSlice(12, [4, 5, 6, 7])).toBe(6);
    expect(initialSlice(12, [])).toBe(5);
    expect(initialSlice(12, [40])).toBe(5);
    expect(initialSlice(0, [])).toBe(0);
  });
});

describe('series chart geometry', () => {
  const f = CHART_FRAME;

  it('spans the plot from the first to the last slice', () => {
    expect(chartX(0, 12)).toBe(f.left);
    expect(chartX(11, 12)).toBe(f.width - f.right);
    expect(chartX(0, 1)).toBe(f.left + (f.width - f.left - f.right) / 2);
  });

  it('puts probability 1 at the top and 0 at the bottom, clamped', () => {
    expect(chartY(1)).toBe(f.top);
    expect(chartY(0)).toBe(f.height - f.bottom);
    expect(chartY(2)).toBe(f.top);
    expect(chartY(-1)).toBe(f.height - f.bottom);
  });

  it('finds the slice nearest to an x position (inverse of chartX)', () => {
    for (let i = 0; i < 12; i += 1) expect(indexAtX(chartX(i, 12), 12)).toBe(i);
    expect(indexAtX(-100, 12)).toBe(0);
    expect(indexAtX(10_000, 12)).toBe(11);
    expect(indexAtX(300, 1)).toBe(0);
  });

  it('draws a line that breaks where a slice has no value', () => {
    const path = linePath([0.5, 0.5, null, 1]);
    expect(path.match(/M/g)).toHaveLength(2);
    expect(path.match(/L/g)).toHaveLength(1);
    expect(linePath([null, null])).toBe('');
  });

  it('groups key slices into runs and shades each inside the plot', () => {
    expect(runs([5, 3, 4, 9, 9])).toEqual([
      [3, 5],
      [9, 9],
    ]);
    const first = bandX([0, 0], 12);
    expect(first.x).toBe(f.left);
    const last = bandX([11, 11], 12);
    expect(last.x + last.width).toBeCloseTo(f.width - f.right);
  });

  it('collects each model’s P(positive) per slice', () => {
    const slices = [slice(0), slice(1, { classifications: [] }), slice(2)];
    expect(chartModels(slices)).toEqual(['cnn']);
    const data = seriesByModel(slices, ['cnn']);
    expect(data.cnn?.[1]).toBeNull();
    expect(data.cnn?.[2]).toBeCloseTo(0.4);
  });
});

describe('study input summary', () => {
  it('reads the free-form input defensively', () => {
    const input = readStudyInput({
      format: 'dicom',
      slices: 12,
      rows: 96,
      cols: 96,
      pixel_spacing: [1, 1],
      slice_spacing: -1.5,
      skipped: [{ name: 'a.txt', code: 'corrupt_image', reason: 'not readable DICOM' }, 'junk'],
      duplicates: ['IM0003.dcm'],
      other_series: [{ series_uid: '1.2.3', slices: 3, sagittal: false }],
    });
    expect(input.slices).toBe(12);
    expect(input.skipped[0]).toEqual({ name: 'a.txt', code: 'corrupt_image', reason: 'not readable DICOM' });
    expect(input.skipped[1]?.code).toBe('skipped');
    expect(input.otherSeries[0]).toEqual({ series_uid: '1.2.3', slices: 3, sagittal: false });
    expect(geometrySentence(input)).toBe('96 × 96 px · 1 × 1 mm pixels · slices 1.5 mm apart');
    expect(readStudyInput(null).skipped).toEqual([]);
    expect(geometrySentence(readStudyInput({}))).toBe('Geometry not reported');
  });
});

describe('study vocabulary', () => {
  it('knows which states still move', () => {
    expect(isOpenStatus('queued')).toBe(true);
    expect(isOpenStatus('running')).toBe(true);
    expect(isOpenStatus('done')).toBe(false);
    expect(isOpenStatus('completed')).toBe(false);
    expect(isOpenStatus(undefined)).toBe(false);
    expect(phaseLabel('segment')).toMatch(/Segmenting/);
    expect(phaseLabel(null)).toMatch(/Waiting/);
    expect(phaseLabel('mystery')).toBe('Mystery');
  });

  it('says when labels come from image-feature rules', () => {
    expect(provenanceShort({ label_source: 'feature_rule_v2' })).toMatch(/image-feature rules, not radiologists/);
    expect(provenanceShort({ label_source: 'clinical' })).toBe('Labels from clinical');
    expect(provenanceShort(null)).toMatch(/unknown/);
  });
});

describe('downloads and uploads', () => {
  it('names downloads after the product, the id and the content', () => {
    const id = '8f14e45f-ceea-467f-a0e6-1b2c3d4e5f60';
    expect(downloadName('study', id, 'mask')).toBe('spondyscan-study-8f14e45f-mask.nii.gz');
    expect(downloadName('study', id, 'json')).toBe('spondyscan-study-8f14e45f.json');
    expect(downloadName('study', id, 'dicom')).toBe('spondyscan-study-8f14e45f-dicom.zip');
    expect(downloadName('study', id, 'fhir')).toBe('spondyscan-study-8f14e45f-fhir.json');
    expect(downloadName('job', id, 'csv')).toBe('spondyscan-job-8f14e45f-results.csv');
    expect(downloadName('job', id, 'json')).toBe('spondyscan-job-8f14e45f-results.json');
    expect(downloadName('job', '../../x', 'csv')).toBe('spondyscan-job-x-results.csv');
  });

  it('tells a zip, a NIfTI and a DICOM series apart by name', () => {
    expect(uploadShape([])).toBe('empty');
    expect(uploadShape(['series.ZIP'])).toBe('zip');
    expect(uploadShape(['t1.nii.gz'])).toBe('nifti');
    expect(uploadShape(['t1.nii'])).toBe('nifti');
    expect(uploadShape(['IM0001'])).toBe('dicom');
    expect(uploadShape(['a.zip', 'b.zip'])).toBe('dicom');
  });

  it('leaves hidden and system files out of a folder pick', () => {
    expect(isJunkFile('study/.DS_Store')).toBe(true);
    expect(isJunkFile('Thumbs.db')).toBe(true);
    expect(isJunkFile('study/IM0001.dcm')).toBe(false);
  });
});
