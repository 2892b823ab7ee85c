/** Small formatting helpers shared by the pages. */

export function formatPercent(value: number | null | undefined, digits = 0): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return '—';
  return `${(value * 100).toFixed(digits)}%`;
}

export function formatCount(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return '—';
  const abs = Math.abs(value);
  // A no-break space keeps the number and its unit on one line.
  if (abs >= 1e9) return `${(value / 1e9).toFixed(abs >= 1e10 ? 0 : 1)}\u00a0G`;
  if (abs >= 1e6) return `${(value / 1e6).toFixed(abs >= 1e7 ? 0 : 1)}\u00a0M`;
  if (abs >= 1e3) return `${(value / 1e3).toFixed(abs >= 1e4 ? 0 : 1)}\u00a0k`;
  return String(value);
}

export function formatDateTime(iso: string | null | undefined): string {
  if (!iso) return '—';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toLocaleString(undefined, {
    year: 'numeric',
    month: 'short',
    day: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
  });
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

/** Words of metric and field names that are written as abbreviations. */
const ABBREVIATIONS: Record<string, string> = {
  iou: 'IoU',
  roc: 'ROC',
  auc: 'AUC',
  f1: 'F1',
  ece: 'ECE',
  nll: 'NLL',
  ci95: '95% interval',
  sha256: 'SHA-256',
};

/** A snake_case or dotted name as words: `stage_macro_f1` → "Stage macro F1", `as_status` → "AS status". */
export function formatMetricName(name: string): string {
  const words = name.replace(/[_.]+/g, ' ').trim().split(' ');
  const spelled = words.map((w, i) =>
    ABBREVIATIONS[w.toLowerCase()] ?? (i === 0 && w === 'as' && words[1] === 'status' ? 'AS' : w),
  );
  const text = spelled.join(' ');
  return text.charAt(0).toUpperCase() + text.slice(1);
}

export function capitalize(value: string | null | undefined): string {
  if (!value) return '—';
  return value.charAt(0).toUpperCase() + value.slice(1);
}
