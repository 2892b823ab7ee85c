/**
 * Pure pieces of the study (whole series) pages: the status vocabulary, slice navigation, the
 * chart's scales and paths, the input summary and file names. No React here, so each is tested
 * on its own.
 */
import type { LabelProvenance, StudySlice } from '../client/types.gen';

export type StudyStatus = 'queued' | 'running' | 'done' | 'failed' | 'cancelled';
export type JobStatus = 'queued' | 'running' | 'completed' | 'cancelled';
export type ItemStatus = 'queued' | 'running' | 'done' | 'failed' | 'cancelled';

export const STUDY_STATUSES: StudyStatus[] = ['queued', 'running', 'done', 'failed', 'cancelled'];
export const JOB_STATUSES: JobStatus[] = ['queued', 'running', 'completed', 'cancelled'];

/** Still moving: worth polling, and worth a Cancel button. */
export function isOpenStatus(status: string | null | undefined): boolean {
  return status === 'queued' || status === 'running';
}

export const STATUS_LABELS: Record<string, string> = {
  queued: 'Queued',
  running: 'Running',
  done: 'Done',
  completed: 'Completed',
  failed: 'Failed',
  cancelled: 'Cancelled',
};

export function runStatusColor(status: string): string {
  switch (status) {
    case 'done':
    case 'completed':
      return 'teal';
    case 'failed':
      return 'red';
    case 'running':
      return 'clinical';
    case 'cancelled':
      return 'gray';
    default:
      return 'yellow';
  }
}

export const PHASE_LABELS: Record<string, string> = {
  decode: 'Reading the slices',
  domain: 'Checking the applicability domain',
  segment: 'Segmenting every slice',
  classify: 'Classifying the slices',
  explain: 'Explaining the key slices',
  store: 'Storing the result',
};

export function phaseLabel(phase: string | null | undefined): string {
  if (!phase) return 'Waiting for a worker';
  return PHASE_LABELS[phase] ?? phase.charAt(0).toUpperCase() + phase.slice(1);
}

// ----------------------------------------------------------------------------- navigation

/**
 * The slice a key press moves to in the viewer, or null when the key is not ours (so the
 * browser keeps its default). Left/Up go back, Right/Down forward, Page keys jump ten.
 */
export function sliceForKey(key: string, index: number, total: number): number | null {
  if (total <= 0) return null;
  const last = total - 1;
  const clamp = (i: number) => Math.min(last, Math.max(0, i));
  switch (key) {
    case 'ArrowLeft':
    case 'ArrowUp':
      return clamp(index - 1);
    case 'ArrowRight':
    case 'ArrowDown':
      return clamp(index + 1);
    case 'PageUp':
      return clamp(index - 10);
    case 'PageDown':
      return clamp(index + 10);
    case 'Home':
      return 0;
    case 'End':
      return last;
    default:
      return null;
  }
}

/** Pixels of wheel travel per slice: one notch of a mouse wheel, a short swipe on a pad. */
export const WHEEL_STEP = 50;

/**
 * Accumulate wheel travel (pixels) and turn it into whole slice steps, keeping the rest, so a
 * touchpad's many small events move as far as one mouse notch does.
 */
export function wheelSteps(accumulated: number, delta: number): { steps: number; rest: number } {
  const total = accumulated + delta;
  const steps = Math.trunc(total / WHEEL_STEP);
  return { steps, rest: total - steps * WHEEL_STEP };
}

/** Wheel delta in pixels whatever the event's unit (lines are about 16 px, pages 800). */
export function wheelPixels(deltaY: number, deltaMode: number): number {
  if (deltaMode === 1) return deltaY * 16;
  if (deltaMode === 2) return deltaY * 800;
  return deltaY;
}

/** Where the viewer opens: the central key slice, else the middle of the series. */
export function initialSlice(total: number, keySlices: number[]): number {
  if (total <= 0) return 0;
  const keys = keySlices.filter((k) => k >= 0 && k < total).sort((a, b) => a - b);
  if (keys.length > 0) return keys[Math.floor(keys.length / 2)] as number;
  return Math.floor((total - 1) / 2);
}

// ----------------------------------------------------------------------------- chart

export interface ChartFrame {
  width: number;
  height: number;
  left: number;
  right: number;
  top: number;
  bottom: number;
}

export const CHART_FRAME: ChartFrame = { width: 720, height: 220, left: 44, right: 12, top: 12, bottom: 34 };

/** x of slice `index` of `count` (evenly spaced, first and last at the plot's edges). */
export function chartX(index: number, count: number, frame: ChartFrame = CHART_FRAME): number {
  const inner = frame.width - frame.left - frame.right;
  if (count <= 1) return frame.left + inner / 2;
  return frame.left + (index / (count - 1)) * inner;
}

/** y of probability `p` (0 at the bottom, 1 at the top; clamped). */
export function chartY(p: number, frame: ChartFrame = CHART_FRAME): number {
  const inner = frame.height - frame.top - frame.bottom;
  const v = Math.min(1, Math.max(0, p));
  return frame.top + (1 - v) * inner;
}

/** The slice nearest to an x position in chart units (the inverse of chartX). */
export function indexAtX(x: number, count: number, frame: ChartFrame = CHART_FRAME): number {
  if (count <= 1) return 0;
  const inner = frame.width - frame.left - frame.right;
  const i = Math.round(((x - frame.left) / inner) * (count - 1));
  return Math.min(count - 1, Math.max(0, i));
}

/**
 * An SVG path through the points; a missing value (a slice without that model's output) breaks
 * the line instead of bridging it.
 */
export function linePath(values: Array<number | null>, frame: ChartFrame = CHART_FRAME): string {
  const parts: string[] = [];
  let pen = false;
  values.forEach((v, i) => {
    if (v === null || !Number.isFinite(v)) {
      pen = false;
      return;
    }
    const cmd = pen ? 'L' : 'M';
    parts.push(`${cmd}${chartX(i, values.length, frame).toFixed(1)},${chartY(v, frame).toFixed(1)}`);
    pen = true;
  });
  return parts.join(' ');
}

/** Runs of consecutive slice indices, as [first, last] pairs (for shading the key slices). */
export function runs(indices: number[]): Array<[number, number]> {
  const sorted = [...new Set(indices)].sort((a, b) => a - b);
  const out: Array<[number, number]> = [];
  for (const i of sorted) {
    const last = out[out.length - 1];
    if (last && i === last[1] + 1) last[1] = i;
    else out.push([i, i]);
  }
  return out;
}

/** The shaded band of a run of slices: half a step either side, kept inside the plot. */
export function bandX(
  run: [number, number],
  count: number,
  frame: ChartFrame = CHART_FRAME,
): { x: number; width: number } {
  const inner = frame.width - frame.left - frame.right;
  const half = count <= 1 ? inner / 2 : inner / (count - 1) / 2;
  const x0 = Math.max(frame.left, chartX(run[0], count, frame) - half);
  const x1 = Math.min(frame.width - frame.right, chartX(run[1], count, frame) + half);
  return { x: x0, width: Math.max(1, x1 - x0) };
}

/** Each model's P(AS positive) per slice, null where the slice has none for it. */
export function seriesByModel(slices: StudySlice[], modelKeys: string[]): Record<string, Array<number | null>> {
  const out: Record<string, Array<number | null>> = {};
  for (const key of modelKeys) {
    out[key] = slices.map((s) => s.classifications?.find((c) => c.model === key)?.p_positive ?? null);
  }
  return out;
}

/** Models that answered on at least one slice, in the order they first appear. */
export function chartModels(slices: StudySlice[]): string[] {
  const keys: string[] = [];
  for (const s of slices) for (const c of s.classifications ?? []) if (!keys.includes(c.model)) keys.push(c.model);
  return keys;
}

// ----------------------------------------------------------------------------- input summary

export interface SkippedFile {
  name: string;
  code: string;
  reason: string;
}

export interface OtherSeries {
  series_uid: string;
  slices: number | null;
  sagittal: boolean | null;
}

export interface StudyInput {
  format: string | null;
  slices: number | null;
  rows: number | null;
  cols: number | null;
  files: number | null;
  modality: string | null;
  pixelSpacing: [number, number] | null;
  sliceSpacing: number | null;
  skipped: SkippedFile[];
  duplicates: string[];
  otherSeries: OtherSeries[];
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const str = (v: unknown): string | null => (typeof v === 'string' && v ? v : null);
const rec = (v: unknown): Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};

/** The study's input summary (a free-form object in the API) read defensively. */
export function readStudyInput(input: Record<string, unknown> | null | undefined): StudyInput {
  const i = rec(input);
  const spacing = Array.isArray(i.pixel_spacing) ? i.pixel_spacing.map(num) : [];
  return {
    format: str(i.format),
    slices: num(i.slices),
    rows: num(i.rows),
    cols: num(i.cols),
    files: num(i.files),
    modality: str(i.modality),
    pixelSpacing:
      spacing.length >= 2 && spacing[0] !== null && spacing[1] !== null ? [spacing[0] as number, spacing[1] as number] : null,
    sliceSpacing: num(i.slice_spacing),
    skipped: (Array.isArray(i.skipped) ? i.skipped : []).map((s) => {
      const r = rec(s);
      return { name: str(r.name) ?? '(unnamed)', code: str(r.code) ?? 'skipped', reason: str(r.reason) ?? '' };
    }),
    duplicates: (Array.isArray(i.duplicates) ? i.duplicates : []).map((d) => (typeof d === 'string' ? d : String(rec(d).name ?? d))),
    otherSeries: (Array.isArray(i.other_series) ? i.other_series : []).map((s) => {
      const r = rec(s);
      return {
        series_uid: str(r.series_uid) ?? 'unknown series',
        slices: num(r.slices),
        sagittal: typeof r.sagittal === 'boolean' ? r.sagittal : null,
      };
    }),
  };
}

export const FORMAT_LABELS: Record<string, string> = {
  dicom: 'DICOM series',
  'dicom-multiframe': 'DICOM multi-frame',
  nifti: 'NIfTI volume',
};

export function formatLabel(format: string | null | undefined): string {
  if (!format) return 'Series';
  return FORMAT_LABELS[format] ?? format.toUpperCase();
}

/** "256 × 256 px · 0.94 × 0.94 mm · slices 4 mm apart" (what is known of it). */
export function geometrySentence(input: StudyInput): string {
  const parts: string[] = [];
  if (input.rows !== null && input.cols !== null) parts.push(`${input.rows} × ${input.cols} px`);
  if (input.pixelSpacing) parts.push(`${fixed(input.pixelSpacing[0])} × ${fixed(input.pixelSpacing[1])} mm pixels`);
  if (input.sliceSpacing !== null) parts.push(`slices ${fixed(Math.abs(input.sliceSpacing))} mm apart`);
  return parts.length > 0 ? parts.join(' · ') : 'Geometry not reported';
}

function fixed(v: number): string {
  return Number.isInteger(v) ? String(v) : v.toFixed(2).replace(/0$/, '');
}

// ----------------------------------------------------------------------------- provenance

/** True when a model learnt from labels made by image-feature rules rather than by readers. */
export function isRuleLabelled(provenance: LabelProvenance | null | undefined): boolean {
  return Boolean(provenance?.label_source?.startsWith('feature_rule'));
}

export function provenanceShort(provenance: LabelProvenance | null | undefined): string {
  if (!provenance) return 'Label provenance unknown';
  if (isRuleLabelled(provenance)) return `Labels from image-feature rules, not radiologists (${provenance.label_source})`;
  return `Labels from ${provenance.label_source}`;
}

// ----------------------------------------------------------------------------- downloads

/** The first block of a UUID: short, and unique enough within one account's files. */
export function shortId(id: string): string {
  return (id.split('-')[0] || id).slice(0, 12);
}

export type DownloadKind = 'mask' | 'json' | 'csv' | 'dicom' | 'fhir';

/** File names for downloads: product, what, short id, extension; safe on every OS. */
export function downloadName(what: 'study' | 'job', id: string, kind: DownloadKind): string {
  const base = `spondyscan-${what}-${shortId(id).replace(/[^0-9A-Za-z_-]/g, '') || 'x'}`;
  if (kind === 'mask') return `${base}-mask.nii.gz`;
  if (kind === 'csv') return `${base}-results.csv`;
  if (kind === 'dicom') return `${base}-dicom.zip`;
  if (kind === 'fhir') return `${base}-fhir.json`;
  return `${base}${what === 'job' ? '-results' : ''}.json`;
}

// ----------------------------------------------------------------------------- upload

export type UploadShape = 'zip' | 'nifti' | 'dicom' | 'empty';

/** What a chosen set of files looks like to the study intake (by name; the server decides). */
export function uploadShape(names: string[]): UploadShape {
  if (names.length === 0) return 'empty';
  if (names.length === 1) {
    const name = (names[0] as string).toLowerCase();
    if (name.endsWith('.zip')) return 'zip';
    if (name.endsWith('.nii') || name.endsWith('.nii.gz')) return 'nifti';
  }
  return 'dicom';
}

/** Files a folder pick brings along that are never images (hidden files, OS metadata). */
export function isJunkFile(name: string): boolean {
  const base = name.split('/').pop() ?? name;
  return base.startsWith('.') || /^(thumbs\.db|desktop\.ini)$/i.test(base);
}
