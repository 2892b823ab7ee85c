/**
 * Bundle manifests store measured metrics as nested objects whose exact layout depends on the
 * task; these helpers find the headline number without assuming one layout.
 */

type Json = unknown;

function isRecord(value: Json): value is Record<string, Json> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function asFraction(value: Json): number | null {
  if (typeof value !== 'number' || !Number.isFinite(value)) return null;
  // Some reports store percentages; show everything as a fraction of one.
  if (value > 1 && value <= 100) return value / 100;
  return value >= 0 && value <= 1 ? value : null;
}

/** Depth-first search for the first numeric value whose key matches one of `keys`, in order. */
export function findMetric(metrics: Json, keys: string[], maxDepth = 4): number | null {
  if (!isRecord(metrics)) return null;
  for (const key of keys) {
    const direct = asFraction(metrics[key]);
    if (direct !== null) return direct;
  }
  if (maxDepth === 0) return null;
  // Prefer the test split, then the binary (AS status) head, then anything else.
  const preferred = ['test', 'binary', 'binary_output', 'as_status', 'status', 'segmentation'];
  const children = Object.keys(metrics).sort((a, b) => {
    const ia = preferred.indexOf(a);
    const ib = preferred.indexOf(b);
    return (ia === -1 ? 99 : ia) - (ib === -1 ? 99 : ib);
  });
  for (const child of children) {
    if (/train|val(idation)?$/.test(child) && children.includes('test')) continue;
    const found = findMetric(metrics[child], keys, maxDepth - 1);
    if (found !== null) return found;
  }
  return null;
}

export interface HeadlineMetric {
  label: string;
  value: number;
}

/** The measured number to show beside a model: accuracy for classifiers, Dice for segmenters. */
export function headlineMetric(task: string, metrics: Json): HeadlineMetric | null {
  if (task === 'segmentation') {
    const dice = findMetric(metrics, ['dice', 'dice_coefficient', 'mean_dice', 'test_dice']);
    if (dice !== null) return { label: 'Dice', value: dice };
    const iou = findMetric(metrics, ['iou', 'mean_iou', 'jaccard']);
    return iou !== null ? { label: 'IoU', value: iou } : null;
  }
  const accuracy = findMetric(metrics, [
    'accuracy',
    'binary_accuracy',
    'as_accuracy',
    'status_accuracy',
    'test_accuracy',
    'binary_output_accuracy',
  ]);
  return accuracy !== null ? { label: 'Accuracy', value: accuracy } : null;
}

/** Flatten nested metrics to `a.b.c -> number` rows for a table (numbers only). */
export function flattenMetrics(metrics: Json, prefix = '', depth = 3): Array<[string, number]> {
  if (!isRecord(metrics)) return [];
  const rows: Array<[string, number]> = [];
  for (const [key, value] of Object.entries(metrics)) {
    const name = prefix ? `${prefix}.${key}` : key;
    if (typeof value === 'number' && Number.isFinite(value)) rows.push([name, value]);
    else if (isRecord(value) && depth > 0) rows.push(...flattenMetrics(value, name, depth - 1));
  }
  return rows;
}

export interface CrossValidatedHeadline extends HeadlineMetric {
  low: number;
  high: number;
  folds: number;
}

/**
 * The cross-validated counterpart of the headline number (Dice, else IoU, for segmenters; AS
 * status accuracy for classifiers) with its 95% interval, when the bundle was cross-validated.
 */
export function crossValidatedHeadline(
  task: string,
  cv: { k: number; metrics: Record<string, { pooled: number; ci95: [number, number] }> } | null | undefined,
): CrossValidatedHeadline | null {
  if (!cv) return null;
  const candidates: [string, string][] =
    task === 'segmentation'
      ? [
          ['dice', 'Dice'],
          ['iou', 'IoU'],
        ]
      : [['binary_accuracy', 'Accuracy']];
  for (const [key, label] of candidates) {
    const m = cv.metrics[key];
    if (m && Number.isFinite(m.pooled)) return { label, value: m.pooled, low: m.ci95[0], high: m.ci95[1], folds: cv.k };
  }
  return null;
}
